{
  "targets": [
    {
      "target_name": "netdev",
      "sources": [
        "native/addon.c",
        "native/tap.c",
        "native/packet.c",
        "native/gso.c",
        "native/link.c",
        "native/notify.c",
        "native/udp.c",
        "native/udp6.c",
        "native/fair.c",
        "native/flowcache.c",
        "native/vxlan_tx.c",
        "native/tap_gro.c",
        "native/vxlan_gso.c",
        "native/udp_gro.c",
        "native/tcpopt.c",
        "native/haltpoll.c",
        "native/uring.c"
      ],
      "defines": ["NAPI_VERSION=8", "_GNU_SOURCE"],
      "cflags_c": ["-std=c11", "-O2", "-Wall", "-Wextra", "-Wno-unused-parameter", "-fvisibility=hidden"]
    }
  ]
}
