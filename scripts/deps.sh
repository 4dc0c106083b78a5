#!/usr/bin/env bash
# Installs what building and testing kybern needs on a fresh Debian machine, when it is missing:
# protoc (etcd-client and k8s-cri build from .proto files), and real etcd/etcdctl 3.4 that the
# tests compare kybern against.
set -euo pipefail
need=()
command -v protoc >/dev/null || need+=(protobuf-compiler)
[ -e /usr/include/google/protobuf/timestamp.proto ] || need+=(libprotobuf-dev)
command -v etcdctl >/dev/null || need+=(etcd-client)
command -v etcd >/dev/null || need+=(etcd-server)
command -v openssl >/dev/null || need+=(openssl)
command -v curl >/dev/null || need+=(curl)
command -v nft >/dev/null || need+=(nftables)
command -v ip >/dev/null || need+=(iproute2)
command -v python3 >/dev/null || need+=(python3 python3-pip)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing: ${need[*]}" >&2
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
  # Debian starts the etcd service on install; the tests start their own on other ports.
  if command -v systemctl >/dev/null && systemctl is-active -q etcd 2>/dev/null; then
    $SUDO systemctl stop etcd || true
  fi
fi
# The Python `kubernetes` client (PyPI) that the API server tests drive.
if ! python3 -c 'import kubernetes' 2>/dev/null; then
  echo "installing: the Python kubernetes client (pip)" >&2
  python3 -m pip install -q kubernetes 2>/dev/null \
    || python3 -m pip install -q --break-system-packages kubernetes
fi
