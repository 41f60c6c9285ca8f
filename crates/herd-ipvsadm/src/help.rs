//! `-h` and `-v`, in ipvsadm's words, for the options herd supports.

macro_rules! version_line {
    () => {
        concat!(
            "herd ipvsadm v",
            env!("CARGO_PKG_VERSION"),
            " (compatible with ipvsadm v1.31 and IPVS v1.2.1)\n"
        )
    };
}

/// The output of `-v`/`--version`.
pub fn version_text() -> &'static str {
    version_line!()
}

/// The output of `-h`/`--help`, in ipvsadm's layout.
pub fn help_text() -> &'static str {
    concat!(
        version_line!(),
        "Usage:\n",
        "  herd ipvsadm -A|E virtual-service [-s scheduler] [-p [timeout]] [-M netmask] [-b sched-flags]\n",
        "  herd ipvsadm -D virtual-service\n",
        "  herd ipvsadm -C\n",
        "  herd ipvsadm -R\n",
        "  herd ipvsadm -S [-n]\n",
        "  herd ipvsadm -a|e virtual-service -r server-address [options]\n",
        "  herd ipvsadm -d virtual-service -r server-address\n",
        "  herd ipvsadm -L|l [virtual-service] [options]\n",
        "  herd ipvsadm -Z [virtual-service]\n",
        "  herd ipvsadm --set tcp tcpfin udp\n",
        "  herd ipvsadm -h\n",
        "\n",
        "Commands:\n",
        "Either long or short options are allowed.\n",
        "  --add-service     -A        add virtual service with options\n",
        "  --edit-service    -E        edit virtual service with options\n",
        "  --delete-service  -D        delete virtual service\n",
        "  --clear           -C        clear the whole table\n",
        "  --restore         -R        restore rules from stdin\n",
        "  --save            -S        save rules to stdout\n",
        "  --add-server      -a        add real server with options\n",
        "  --edit-server     -e        edit real server with options\n",
        "  --delete-server   -d        delete real server\n",
        "  --list            -L|-l     list the table\n",
        "  --zero            -Z        zero counters in a service or all services\n",
        "  --set tcp tcpfin udp        set connection timeout values\n",
        "  --help            -h        display this help message\n",
        "  --version         -v        display the version\n",
        "\n",
        "virtual-service:\n",
        "  --tcp-service|-t  service-address   service-address is host[:port]\n",
        "  --udp-service|-u  service-address   service-address is host[:port]\n",
        "\n",
        "Options:\n",
        "  --scheduler    -s scheduler         one of rr|wrr|lc|wlc|lblc|lblcr|dh|sh|sed|nq|fo|ovf|mh|twos,\n",
        "                                      the default scheduler is wlc.\n",
        "  --persistent   -p [timeout]         persistent service (default timeout 360 seconds)\n",
        "  --netmask      -M netmask           persistent granularity mask\n",
        "  --real-server  -r server-address    server-address is host (and port)\n",
        "  --gatewaying   -g                   gatewaying (direct routing) (default)\n",
        "  --ipip         -i                   ipip encapsulation (tunneling)\n",
        "  --masquerading -m                   masquerading (NAT)\n",
        "  --tun-type      type                ipip, the only tunnel type\n",
        "  --weight       -w weight            capacity of real server\n",
        "  --u-threshold  -x uthreshold        upper threshold of connections\n",
        "  --l-threshold  -y lthreshold        lower threshold of connections\n",
        "  --connection   -c                   output of current IPVS connections\n",
        "  --timeout                           output of timeout (tcp tcpfin udp)\n",
        "  --daemon                            output of daemon information\n",
        "  --stats                             output of statistics information\n",
        "  --rate                              output of rate information\n",
        "  --exact                             expand numbers (display exact values)\n",
        "  --thresholds                        output of thresholds information\n",
        "  --persistent-conn                   output of persistent connection info\n",
        "  --tun-info                          output of tunnel information\n",
        "  --nosort                            disable sorting output of service/server entries\n",
        "  --sort                              does nothing, for backwards compatibility\n",
        "  --numeric      -n                   numeric output of addresses and ports\n",
        "  --sched-flags  -b flags             scheduler flags (comma-separated):\n",
        "                                      sh-fallback,sh-port for sh, mh-fallback,mh-port for mh\n",
        "\n",
        "Not supported by herd: firewall-mark (-f) and SCTP services, --pe, --ops, the\n",
        "connection sync daemon (--start-daemon, --stop-daemon and their options).\n",
    )
}
