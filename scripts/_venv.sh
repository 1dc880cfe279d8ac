# Sourced by scripts/main and scripts/test: create or refresh the project's virtual environment
# in .venv (or $CNNLAB_VENV) and install cnnlab with everything it needs. Nothing here downloads
# from outside the package registries; torch/torchvision are pinned to the builds pip finds locally.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${CNNLAB_VENV:-$root/.venv}"
python="${PYTHON:-python3}"

if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
    echo "cnnlab: error: Python >= 3.10 is required (found: $("$python" --version 2>&1))" >&2
    exit 2
fi
[ -x "$venv/bin/python" ] || "$python" -m venv "$venv"

# Re-install only when what we install from changed.
stamp="$venv/.cnnlab-stamp"
want="$(cat "$root/pyproject.toml" "$root/constraints.txt" | sha256sum | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    echo "cnnlab: installing into $venv (first run takes about two minutes) ..." >&2
    # (grep drops the noise pip prints about this machine's local index folders)
    pip_() { "$venv/bin/python" -m pip install -q "$@" 2> >(grep -v "is ignored: it is neither a file" >&2); }
    pip_ --upgrade pip
    pip_ -c "$root/constraints.txt" torch==2.14.1 torchvision==0.29.1
    pip_ -c "$root/constraints.txt" -e "$root[test]"
    echo "$want" > "$stamp"
fi
export PATH="$venv/bin:$PATH"
cd "$root"
