#!/usr/bin/env bash
# Fresh "servers" for testing deploys over SSH: privileged containers made from the debootstrap base,
# running sshd and Python and nothing else, reached only on 127.0.0.1 with a throwaway key.
# Two sets that can run side by side (own containers, network, SSH ports and key folder):
# `default` (inventory/test-hosts, tests/hosts) and `ha` (inventory/test-ha, tests/ha).
set -euo pipefail

usage() {
  cat <<'USAGE'
Usage: scripts/testhosts.sh [--set SET] [--dir DIR] COMMAND

Commands:
  up            build the test-host image, create the throwaway SSH key and start the hosts (idempotent)
  down          remove the hosts, their Docker volumes and their network (the key stays in DIR)
  remove NAME   remove one host and its Docker volume (a lost server: up then starts a fresh one)
  status        list the hosts and their published ports
  offline NAME  block NAME's outbound traffic except to the other test hosts (air-gapped deploys)
  online NAME   lift that block

Hosts of set `default` (name, SSH port on 127.0.0.1, address on network labelstack-th, more published ports):
  app  127.0.0.1:22201  10.213.7.10  127.0.0.1:22443 -> 8443 (Label Studio over HTTPS)
  db   127.0.0.1:22202  10.213.7.11

Hosts of set `ha` (containers labelstack-ha-*, network labelstack-ha):
  app   127.0.0.1:22211  10.213.17.10
  db1   127.0.0.1:22212  10.213.17.11
  db2   127.0.0.1:22213  10.213.17.12
  db3   127.0.0.1:22214  10.213.17.13
  app2  127.0.0.1:22215  10.213.17.14
  lb    127.0.0.1:22216  10.213.17.20  127.0.0.1:22453 -> 8443 (Label Studio over HTTPS, the balancer)

Options:
  --set SET     default or ha (env TESTHOSTS_SET, default `default`)
  --cpus N      CPUs each host started by `up` may use (env TESTHOSTS_CPUS, default: no limit; a shared machine)
  --dir DIR     where the key and known_hosts live (env TESTHOSTS_DIR, default .testhosts for set default,
                .testhosts-ha for set ha; gitignored)
  -h, --help    this text
USAGE
}

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
set=${TESTHOSTS_SET:-default}
dir=${TESTHOSTS_DIR:-}
cpus=${TESTHOSTS_CPUS:-}
base_image=labelstack/debian:bookworm
image=labelstack/testhost:latest
offline_chain=LABELSTACK-OFFLINE

fail() { echo "FAIL: $*" >&2; exit 1; }

command=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --set) set=${2:-}; shift 2 ;;
    --dir) dir=$2; shift 2 ;;
    --cpus) cpus=${2:-}; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    up|down|status) command=$1; shift ;;
    offline|online|remove) command=$1; target=${2:-}; [[ -n $target ]] || fail "$1 needs a host name (see --help)"; shift 2 ;;
    *) echo "FAIL: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
[[ -n $command ]] || { usage >&2; exit 2; }

# name ssh-port address extra-publish (comma-separated, may be empty)
case "$set" in
  default)
    prefix=labelstack-th
    subnet=10.213.7.0/24
    hosts=(
      "app 22201 10.213.7.10 127.0.0.1:22443:8443"
      "db 22202 10.213.7.11 -"
    )
    dir=${dir:-$repo/.testhosts}
    ;;
  ha)
    prefix=labelstack-ha
    subnet=10.213.17.0/24
    hosts=(
      "app 22211 10.213.17.10 -"
      "db1 22212 10.213.17.11 -"
      "db2 22213 10.213.17.12 -"
      "db3 22214 10.213.17.13 -"
      "app2 22215 10.213.17.14 -"
      "lb 22216 10.213.17.20 127.0.0.1:22453:8443"
    )
    dir=${dir:-$repo/.testhosts-ha}
    ;;
  *) echo "FAIL: unknown host set '$set' (default or ha, see --help)" >&2; exit 2 ;;
esac
network=$prefix
docker version >/dev/null 2>&1 || fail "the Docker engine does not answer on its socket"

container_of() { echo "$prefix-$1"; }

host_row() {
  local row
  for row in "${hosts[@]}"; do
    [[ ${row%% *} == "$1" ]] && { echo "$row"; return 0; }
  done
  fail "no test host named '$1' in set $set (hosts: $(printf '%s\n' "${hosts[@]}" | cut -d' ' -f1 | paste -sd' '))"
}

ensure_image() {
  "$repo/scripts/make-base-image.sh" --tag "$base_image" >/dev/null
  docker build --quiet --build-arg "BASE_IMAGE=$base_image" --tag "$image" "$repo/tests/hosts/testhost" >/dev/null \
    || fail "could not build $image from tests/hosts/testhost/Dockerfile"
}

ensure_key() {
  mkdir -p "$dir"
  chmod 0700 "$dir"
  [[ -f $dir/id_ed25519 ]] || ssh-keygen -q -t ed25519 -N '' -C labelstack-testhosts -f "$dir/id_ed25519"
}

ensure_network() {
  docker network inspect "$network" >/dev/null 2>&1 \
    || docker network create --driver bridge --subnet "$subnet" "$network" >/dev/null
}

start_host() {
  local name=$1 port=$2 address=$3 extra=$4 container
  container=$(container_of "$name")
  if [[ $(docker inspect --format '{{.State.Running}}' "$container" 2>/dev/null) == true ]]; then
    return 0
  fi
  docker rm -f "$container" >/dev/null 2>&1 || true
  local publish=(--publish "127.0.0.1:$port:22") limits=()
  [[ $extra == - ]] || publish+=(--publish "$extra")
  [[ -z $cpus ]] || limits=(--cpus "$cpus")
  docker run --detach --name "$container" --hostname "$name" --privileged --init \
    --network "$network" --ip "$address" "${publish[@]}" "${limits[@]}" \
    --volume "$container-docker:/var/lib/docker" \
    --volume "$dir/id_ed25519.pub:/root/.ssh/authorized_keys:ro" \
    --label labelstack.testhost=true --label "labelstack.testhost.set=$set" "$image" >/dev/null
}

# known_hosts from the keys each host generated, so SSH checks host keys strictly.
write_known_hosts() {
  local row name port key deadline
  : >"$dir/known_hosts.new"
  for row in "${hosts[@]}"; do
    read -r name port _ _ <<<"$row"
    deadline=$((SECONDS + 30))
    until key=$(docker exec "$(container_of "$name")" cat /etc/ssh/ssh_host_ed25519_key.pub 2>/dev/null); do
      ((SECONDS < deadline)) || fail "test host $name generated no SSH host key within 30s (docker logs $(container_of "$name"))"
      sleep 1
    done
    echo "[127.0.0.1]:$port ${key% *}" >>"$dir/known_hosts.new"
  done
  mv "$dir/known_hosts.new" "$dir/known_hosts"
}

wait_for_ssh() {
  local row name port deadline
  for row in "${hosts[@]}"; do
    read -r name port _ _ <<<"$row"
    deadline=$((SECONDS + 30))
    until ssh -q -i "$dir/id_ed25519" -p "$port" -o BatchMode=yes -o ConnectTimeout=3 \
        -o UserKnownHostsFile="$dir/known_hosts" -o StrictHostKeyChecking=yes root@127.0.0.1 true; do
      ((SECONDS < deadline)) || fail "sshd on test host $name (127.0.0.1:$port) did not accept the key within 30s"
      sleep 1
    done
  done
}

up() {
  ensure_key
  ensure_image
  ensure_network
  local row
  for row in "${hosts[@]}"; do
    # shellcheck disable=SC2086 # the row is four words by construction
    start_host $row
  done
  write_known_hosts
  wait_for_ssh
  status
}

remove() {
  local container
  host_row "$1" >/dev/null
  container=$(container_of "$1")
  docker rm -f "$container" >/dev/null 2>&1 || true
  docker volume rm "$container-docker" >/dev/null 2>&1 || true
}

down() {
  local row
  for row in "${hosts[@]}"; do
    remove "${row%% *}"
  done
  docker network rm "$network" >/dev/null 2>&1 || true
  rm -f "$dir/known_hosts"
}

status() {
  docker ps --all --filter "name=^$prefix-" --format 'table {{.Names}}\t{{.Status}}\t{{.Ports}}'
}

# Inside the host: outbound traffic (its own and its containers') may only answer connections or go to
# the test network; everything else is rejected at once, so a deploy that tries to download fails fast.
offline() {
  local container
  host_row "$1" >/dev/null
  container=$(container_of "$1")
  docker exec "$container" sh -euc "
    iptables -N $offline_chain 2>/dev/null || iptables -F $offline_chain
    iptables -A $offline_chain -o lo -j RETURN
    iptables -A $offline_chain -m conntrack --ctstate ESTABLISHED,RELATED -j RETURN
    iptables -A $offline_chain -o eth0 -d $subnet -j RETURN
    iptables -A $offline_chain -o eth0 -j REJECT
    for chain in OUTPUT FORWARD; do
      iptables -C \$chain -j $offline_chain 2>/dev/null || iptables -I \$chain 1 -j $offline_chain
    done"
}

online() {
  local container
  host_row "$1" >/dev/null
  container=$(container_of "$1")
  docker exec "$container" sh -euc "
    for chain in OUTPUT FORWARD; do
      while iptables -D \$chain -j $offline_chain 2>/dev/null; do :; done
    done
    iptables -F $offline_chain 2>/dev/null || true
    iptables -X $offline_chain 2>/dev/null || true"
}

case "$command" in
  up) up ;;
  down) down ;;
  status) status ;;
  offline) offline "$target" ;;
  online) online "$target" ;;
  remove) remove "$target" ;;
esac
