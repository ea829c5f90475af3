//! Traffic interception for sidecar mode, as `istio-iptables` sets it up: the app's
//! outbound TCP is redirected to the proxy's outbound capture port (15001), inbound TCP to
//! its inbound port (15006), and the proxy's own traffic (by uid and gid) is left alone so
//! it does not loop. Rendered in `iptables-restore` format for the `nat` table.

use std::fmt::Write;

/// What to intercept, with Istio's defaults.
#[derive(Debug, Clone)]
pub struct Options {
    /// The uid the proxy runs as (Istio: 1337); its connections are not redirected.
    pub proxy_uid: u32,
    /// The gid the proxy runs as (defaults to the uid).
    pub proxy_gid: u32,
    pub outbound_port: u16,
    pub inbound_port: u16,
    /// Inbound ports never redirected (the proxy's own: stats, health).
    pub exclude_inbound_ports: Vec<u16>,
    /// Outbound ports never redirected.
    pub exclude_outbound_ports: Vec<u16>,
    /// Outbound destinations never redirected (CIDRs).
    pub exclude_outbound_ip_ranges: Vec<String>,
    /// Redirect inbound traffic at all (false: outbound only).
    pub capture_inbound: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            proxy_uid: 1337,
            proxy_gid: 1337,
            outbound_port: 15001,
            inbound_port: 15006,
            exclude_inbound_ports: vec![15020, 15021, 15090],
            exclude_outbound_ports: Vec::new(),
            exclude_outbound_ip_ranges: Vec::new(),
            capture_inbound: true,
        }
    }
}

/// The rules, for `iptables-restore --noflush`.
pub fn rules(o: &Options) -> String {
    let mut r = String::from("*nat\n");
    for chain in [
        "ISTIO_INBOUND",
        "ISTIO_REDIRECT",
        "ISTIO_IN_REDIRECT",
        "ISTIO_OUTPUT",
    ] {
        let _ = writeln!(r, ":{chain} - [0:0]");
    }
    let mut add = |rule: String| {
        r.push_str("-A ");
        r.push_str(&rule);
        r.push('\n');
    };
    add(format!(
        "ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports {}",
        o.outbound_port
    ));
    add(format!(
        "ISTIO_IN_REDIRECT -p tcp -j REDIRECT --to-ports {}",
        o.inbound_port
    ));
    if o.capture_inbound {
        add("PREROUTING -p tcp -j ISTIO_INBOUND".into());
        // SSH and the proxy's own ports stay reachable.
        let mut excluded = vec![22];
        excluded.extend(&o.exclude_inbound_ports);
        for p in excluded {
            add(format!("ISTIO_INBOUND -p tcp --dport {p} -j RETURN"));
        }
        add("ISTIO_INBOUND -p tcp -j ISTIO_IN_REDIRECT".into());
    }
    add("OUTPUT -p tcp -j ISTIO_OUTPUT".into());
    for p in &o.exclude_outbound_ports {
        add(format!("ISTIO_OUTPUT -p tcp --dport {p} -j RETURN"));
    }
    // The proxy's upstream connections from the inbound side use 127.0.0.6.
    add("ISTIO_OUTPUT -o lo -s 127.0.0.6/32 -j RETURN".into());
    for (what, id) in [("uid", o.proxy_uid), ("gid", o.proxy_gid)] {
        // The proxy calling its own workload by a non-loopback address goes inbound.
        if o.capture_inbound {
            add(format!(
                "ISTIO_OUTPUT ! -d 127.0.0.1/32 -o lo -m owner --{what}-owner {id} -j ISTIO_IN_REDIRECT"
            ));
        }
        // The app talking to itself over loopback is not intercepted.
        add(format!(
            "ISTIO_OUTPUT -o lo -m owner ! --{what}-owner {id} -j RETURN"
        ));
        // The proxy's own connections go out as they are.
        add(format!(
            "ISTIO_OUTPUT -m owner --{what}-owner {id} -j RETURN"
        ));
    }
    add("ISTIO_OUTPUT -d 127.0.0.1/32 -j RETURN".into());
    for cidr in &o.exclude_outbound_ip_ranges {
        add(format!("ISTIO_OUTPUT -d {cidr} -j RETURN"));
    }
    add("ISTIO_OUTPUT -j ISTIO_REDIRECT".into());
    r.push_str("COMMIT\n");
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn istio_defaults() {
        let r = rules(&Options::default());
        assert!(r.starts_with("*nat\n:ISTIO_INBOUND - [0:0]\n"));
        assert!(r.ends_with("-A ISTIO_OUTPUT -j ISTIO_REDIRECT\nCOMMIT\n"));
        for want in [
            "-A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports 15001\n",
            "-A ISTIO_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006\n",
            "-A ISTIO_INBOUND -p tcp --dport 15021 -j RETURN\n",
            "-A ISTIO_OUTPUT -m owner --uid-owner 1337 -j RETURN\n",
            "-A ISTIO_OUTPUT -m owner --gid-owner 1337 -j RETURN\n",
        ] {
            assert!(r.contains(want), "{want} missing in\n{r}");
        }
        // The proxy's exclusions come before the catch-all redirect.
        let own = r.find("--uid-owner 1337 -j RETURN").unwrap();
        assert!(own < r.find("-A ISTIO_OUTPUT -j ISTIO_REDIRECT").unwrap());
    }

    #[test]
    fn outbound_only_with_exclusions() {
        let r = rules(&Options {
            proxy_uid: 0,
            proxy_gid: 0,
            capture_inbound: false,
            exclude_outbound_ports: vec![6379],
            exclude_outbound_ip_ranges: vec!["169.254.169.254/32".into()],
            ..Options::default()
        });
        assert!(!r.contains("PREROUTING") && !r.contains("-j ISTIO_IN_REDIRECT"));
        assert!(r.contains("-A ISTIO_OUTPUT -p tcp --dport 6379 -j RETURN\n"));
        assert!(r.contains("-A ISTIO_OUTPUT -d 169.254.169.254/32 -j RETURN\n"));
        assert!(r.contains("--uid-owner 0 -j RETURN"));
    }
}
