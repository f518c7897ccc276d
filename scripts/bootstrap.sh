#!/usr/bin/env bash
# Set up everything the project needs on a fresh Debian 12 machine, idempotently:
# system packages via apt-get (only when missing, only as root), then .venv with the project
# installed editable with its test extras and libnvme. Re-running is cheap (stamp file).
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(dbus swig tshark python3-venv pkg-config iproute2)
STAMP=.venv/.bootstrap-stamp
want_stamp=$(cat pyproject.toml scripts/bootstrap.sh | sha256sum | cut -c1-16)

missing=()
for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
        echo "bootstrap: installing Debian packages: ${missing[*]}"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq >/dev/null
        apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    else
        echo "bootstrap: missing Debian packages: ${missing[*]}" >&2
        echo "bootstrap: run as root, or install them: sudo apt-get install ${missing[*]}" >&2
        exit 1
    fi
fi

if [[ -f $STAMP && $(cat "$STAMP") == "$want_stamp" ]]; then
    exit 0
fi

PY=${PYTHON:-python3}
[[ -x .venv/bin/python ]] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
echo "bootstrap: installing the project and its test tools into .venv"
.venv/bin/python -m pip install -q -e '.[test]'
# libnvme (kernel backend) builds its SWIG bindings from source; a wheel built earlier without
# swig has no bindings and pip would reuse it from its cache, hence --no-cache-dir.
if ! .venv/bin/python -c 'import stas.kernel.libnvme_loader as l; l.load_libnvme()' 2>/dev/null; then
    echo "bootstrap: building libnvme from PyPI (needs swig; takes a minute)"
    if ! .venv/bin/python -m pip install -q --no-cache-dir 'libnvme>=1.8'; then
        echo "bootstrap: WARNING: libnvme did not build; the kernel backend is unavailable" >&2
    fi
fi
echo "$want_stamp" > "$STAMP"
