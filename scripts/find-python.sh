#!/usr/bin/env bash
# Prints the path of a Python interpreter of the wanted minor version (default 3.12):
# pythonX.Y on PATH first, then pyenv's versions. Exits 1 with a hint when none is found.
set -euo pipefail
want="${1:-3.12}"
# pyenv puts shims for every version on PATH; only take one that actually runs.
if command -v "python${want}" >/dev/null 2>&1 && "python${want}" -c '' >/dev/null 2>&1; then
  command -v "python${want}"
  exit 0
fi
root="$(pyenv root 2>/dev/null || echo "${HOME}/.pyenv")"
for candidate in "${root}"/versions/"${want}"*/bin/python"${want}"; do
  if [[ -x "${candidate}" ]]; then
    echo "${candidate}"
    exit 0
  fi
done
echo "error: Python ${want} not found; install it (e.g. 'pyenv install ${want}') or put python${want} on PATH" >&2
exit 1
