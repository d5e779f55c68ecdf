#!/usr/bin/env bash
# Two clients behind two Linux NATs (nftables masquerade), built only from network namespaces
# of our own; nothing is connected to the host's namespace. Adapted from the team lab's
# nat-topo.sh.
#
#   c1 10.0.1.2 -- nat1 10.0.1.1 | 203.0.113.1 --+
#                                                +-- pub: bridge, 203.0.113.100 (STUN/TURN)
#   c2 10.0.2.2 -- nat2 10.0.2.1 | 203.0.113.2 --+
#
#   tests/lab/nat-topo.sh up|down PREFIX     NAT1_MODE / NAT2_MODE = pc | sym
#
# pc: Linux's default masquerade: endpoint-independent mapping that keeps the source port,
# address-and-port-dependent filtering (conntrack). sym: `random,fully-random`: a new random
# port per destination, i.e. a symmetric NAT.
set -euo pipefail
action=${1:?up or down}
p=${2:?prefix}
spaces="${p}pub ${p}nat1 ${p}nat2 ${p}c1 ${p}c2"

down() {
    for n in $spaces; do ip netns del "$n" 2>/dev/null || true; done
}

up() {
    for n in $spaces; do
        ip netns add "$n"
        ip -n "$n" link set lo up
    done
    ip -n "${p}pub" link add br0 type bridge
    ip -n "${p}pub" link set br0 up
    ip -n "${p}pub" addr add 203.0.113.100/24 dev br0
    for i in 1 2; do
        ip -n "${p}pub" link add "p$i" type veth peer name wan netns "${p}nat$i"
        ip -n "${p}pub" link set "p$i" master br0 up
        ip -n "${p}nat$i" addr add "203.0.113.$i/24" dev wan
        ip -n "${p}nat$i" link set wan up
        ip -n "${p}nat$i" link add lan type veth peer name eth0 netns "${p}c$i"
        ip -n "${p}nat$i" addr add "10.0.$i.1/24" dev lan
        ip -n "${p}nat$i" link set lan up
        ip -n "${p}c$i" addr add "10.0.$i.2/24" dev eth0
        ip -n "${p}c$i" link set eth0 up
        ip -n "${p}c$i" route add default via "10.0.$i.1"
        ip netns exec "${p}nat$i" sysctl -qw net.ipv4.ip_forward=1
        local mode_var="NAT${i}_MODE" flags=""
        [ "${!mode_var:-pc}" = sym ] && flags="random,fully-random"
        # The router drops unsolicited traffic to itself: an accepted one would make a
        # conntrack entry holding the public ip:port a later outbound mapping needs.
        ip netns exec "${p}nat$i" nft -f - <<NFT
table ip nat {
  chain postrouting { type nat hook postrouting priority srcnat; policy accept;
    oifname "wan" masquerade $flags
  }
}
table ip filter {
  chain forward { type filter hook forward priority filter; policy drop;
    ct state established,related accept
    iifname "lan" oifname "wan" accept
  }
  chain input { type filter hook input priority filter; policy drop;
    ct state established,related accept
    iifname "lo" accept
    iifname "lan" accept
  }
}
NFT
    done
}

case "$action" in
    up) down; up ;;
    down) down ;;
    *) echo "usage: $0 up|down PREFIX" >&2; exit 2 ;;
esac
