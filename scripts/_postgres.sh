# Sourced by scripts/test: make sure PostgreSQL's server binaries are installed (Debian's
# postgresql package), so the test suite can start a throwaway server for `cnnlab tune
# --storage postgresql://...` (tests/studies/test_tune_postgres.py). Nothing is started here.
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && [ -z "${CNNLAB_SKIP_APT:-}" ]; then
    sudo_=""
    [ "$(id -u)" = 0 ] || sudo_="sudo"
    echo "cnnlab: installing PostgreSQL (Debian package postgresql) for the storage tests ..." >&2
    if ! { $sudo_ apt-get install -y -q postgresql >/dev/null 2>&1 \
           || { $sudo_ apt-get update -q >/dev/null 2>&1 && $sudo_ apt-get install -y -q postgresql >/dev/null 2>&1; }; }; then
        echo "cnnlab: warning: could not install postgresql; the PostgreSQL storage test will be" \
             "skipped (run 'sudo apt-get install postgresql')" >&2
    fi
fi
