"""labelstack_ssrf_banned_subnets: Label Studio's default SSRF block list minus the networks to allow."""

from __future__ import annotations

import ipaddress

# label_studio/core/utils/io.py validate_ip() (1.23.2): the list USE_DEFAULT_BANNED_SUBNETS turns on.
DEFAULT_BANNED_SUBNETS = (
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.0.0.0/24",
    "192.0.2.0/24",
    "192.88.99.0/24",
    "192.168.0.0/16",
    "198.18.0.0/15",
    "198.51.100.0/24",
    "203.0.113.0/24",
    "224.0.0.0/4",
    "233.252.0.0/24",
    "240.0.0.0/4",
    "255.255.255.255/32",
    "::/128",
    "::1/128",
    "::ffff:0:0/96",
    "::ffff:0:0:0/96",
    "64:ff9b::/96",
    "64:ff9b:1::/48",
    "100::/64",
    "2001:0000::/32",
    "2001:20::/28",
    "2001:db8::/32",
    "2002::/16",
    "fc00::/7",
    "fe80::/10",
    "ff00::/8",
)


def labelstack_ssrf_banned_subnets(allowed: list[str] | str) -> list[str]:
    """Every default banned subnet, with the allowed networks cut out of the ones containing them."""
    allow = [ipaddress.ip_network(a, strict=True) for a in ([allowed] if isinstance(allowed, str) else allowed)]
    banned = [ipaddress.ip_network(s) for s in DEFAULT_BANNED_SUBNETS]
    for hole in allow:
        result = []
        for net in banned:
            if net.version == hole.version and hole.subnet_of(net):
                result.extend(sorted(net.address_exclude(hole)))
            else:
                result.append(net)
        banned = result
    return [str(n) for n in banned]


class FilterModule:
    def filters(self) -> dict[str, object]:
        return {"labelstack_ssrf_banned_subnets": labelstack_ssrf_banned_subnets}
