# Sourced by scripts/main and scripts/test: make sure the embedded default data set is installed.
# Fashion-MNIST comes from Debian's package dataset-fashion-mnist (30 MB, installs in seconds).
fmnist=/usr/share/datasets/fashion-mnist
if [ ! -f "$fmnist/train-images-idx3-ubyte.gz" ] && [ -z "${CNNLAB_SKIP_APT:-}" ]; then
    sudo_=""
    [ "$(id -u)" = 0 ] || sudo_="sudo"
    echo "cnnlab: installing Fashion-MNIST (Debian package dataset-fashion-mnist) ..." >&2
    if ! { $sudo_ apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 \
           || { $sudo_ apt-get update -q >/dev/null 2>&1 && $sudo_ apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1; }; }; then
        echo "cnnlab: warning: could not install dataset-fashion-mnist; run 'sudo apt-get install dataset-fashion-mnist'" \
             "or pass --data-dir to a directory with the four IDX files" >&2
    fi
fi
