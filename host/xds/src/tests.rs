use super::*;
use envoy_types::pb::envoy::config::route::v3::{Route, RouteAction, RouteMatch, VirtualHost};

fn any<T: Message + Name>(m: &T) -> Any {
    Any {
        type_url: T::type_url(),
        value: m.encode_to_vec(),
    }
}

#[test]
fn clusters_take_envoy_defaults_and_refuse_what_lateen_lacks() {
    use envoy_types::pb::envoy::config::cluster::v3::circuit_breakers::Thresholds;
    use envoy_types::pb::envoy::config::cluster::v3::CircuitBreakers;
    use envoy_types::pb::google::protobuf::UInt32Value;
    let eds = Cluster {
        name: "c".into(),
        cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(
            cluster::DiscoveryType::Eds as i32,
        )),
        ..Default::default()
    };
    let c = super::cluster(&any(&eds)).expect("valid");
    assert_eq!(
        (c.max_requests, c.max_connections, c.connect_timeout_ms),
        (1024, 1024, 5000)
    );
    assert_eq!(c.endpoints, ClusterEndpoints::Eds("c".into()));

    let mut limited = eds.clone();
    limited.circuit_breakers = Some(CircuitBreakers {
        thresholds: vec![Thresholds {
            max_requests: Some(UInt32Value { value: 10 }),
            ..Default::default()
        }],
        ..Default::default()
    });
    assert_eq!(
        super::cluster(&any(&limited)).expect("valid").max_requests,
        10
    );

    let mut ring = eds.clone();
    ring.lb_policy = cluster::LbPolicy::RingHash as i32;
    let err = super::cluster(&any(&ring)).unwrap_err();
    assert!(
        err.contains("Cluster `c`") && err.contains("lb_policy"),
        "{err}"
    );

    let mut outlier = eds;
    outlier.outlier_detection = Some(Default::default());
    let err = super::cluster(&any(&outlier)).unwrap_err();
    assert!(err.contains("outlier_detection"), "{err}");
}

#[test]
fn listeners_need_the_router_last_and_only_wasm_before_it() {
    use envoy_types::pb::envoy::config::listener::v3::{Filter, FilterChain};
    use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
        HttpFilter, Rds,
    };
    let with = |filters: Vec<HttpFilter>| {
        let hcm = HttpConnectionManager {
            route_specifier: Some(RouteSpecifier::Rds(Rds {
                config_source: None,
                route_config_name: "r".into(),
            })),
            http_filters: filters,
            ..Default::default()
        };
        let l = Listener {
            name: "l".into(),
            address: Some(Address {
                address: Some(address::Address::SocketAddress(
                    envoy_types::pb::envoy::config::core::v3::SocketAddress {
                        address: "127.0.0.1".into(),
                        port_specifier: Some(socket_address::PortSpecifier::PortValue(80)),
                        ..Default::default()
                    },
                )),
            }),
            filter_chains: vec![FilterChain {
                filters: vec![Filter {
                    name: "hcm".into(),
                    config_type: Some(filter::ConfigType::TypedConfig(any(&hcm))),
                }],
                ..Default::default()
            }],
            ..Default::default()
        };
        listener(&any(&l))
    };
    let router = HttpFilter {
        name: "router".into(),
        config_type: Some(http_filter::ConfigType::TypedConfig(
            any(&Router::default()),
        )),
        ..Default::default()
    };
    let l = with(vec![router.clone()]).expect("valid");
    assert!(matches!(l.routes, Routes::Rds(ref n) if n == "r"));
    assert!(l.filters.is_empty());

    let other = HttpFilter {
        name: "cors".into(),
        config_type: Some(http_filter::ConfigType::TypedConfig(Any {
            type_url: "type.googleapis.com/envoy.extensions.filters.http.cors.v3.Cors".into(),
            value: Vec::new(),
        })),
        ..Default::default()
    };
    let err = with(vec![other, router.clone()]).unwrap_err();
    assert!(
        err.contains("`cors`") && err.contains("not supported"),
        "{err}"
    );
    let err = with(vec![router.clone(), router]).unwrap_err();
    assert!(err.contains("must be the last"), "{err}");
}

#[test]
fn names_unsupported_fields() {
    let r = Route {
        name: "r".into(),
        stat_prefix: "x".into(),
        ..Default::default()
    };
    let mut rest = r.clone();
    rest.name.clear();
    assert_eq!(set_fields(&rest).as_deref(), Some("stat_prefix"));
    assert_eq!(set_fields(&Route::default()), None);
}

#[test]
fn route_configuration_maps_matches_and_weights() {
    let rc = RouteConfiguration {
        name: "rc".into(),
        virtual_hosts: vec![VirtualHost {
            name: "vh".into(),
            domains: vec!["example.com:8080".into(), "*".into()],
            routes: vec![Route {
                name: "r0".into(),
                r#match: Some(RouteMatch {
                    path_specifier: Some(PathSpecifier::Prefix("/api".into())),
                    headers: vec![HeaderMatcher {
                        name: "X-Env".into(),
                        invert_match: true,
                        header_match_specifier: Some(HeaderMatchSpecifier::ExactMatch(
                            "dev".into(),
                        )),
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
                action: Some(route::Action::Route(RouteAction {
                    cluster_specifier: Some(route_action::ClusterSpecifier::Cluster("c1".into())),
                    ..Default::default()
                })),
                ..Default::default()
            }],
            ..Default::default()
        }],
        ..Default::default()
    };
    let vhs = route_configuration(&any(&rc)).expect("valid");
    assert_eq!(vhs[0].domains, ["example.com", "*"]);
    let r = &vhs[0].routes[0];
    assert_eq!(
        r.matches[0].uri.as_ref().and_then(|u| u.prefix.as_deref()),
        Some("/api")
    );
    assert!(r.matches[0].without_headers.contains_key("x-env"));
    assert_eq!(r.route[0].cluster, "c1");
    assert_eq!(r.timeout_ms, 15_000);
    assert_eq!(
        r.retry.as_deref().map(|s| s.split(';').next()),
        Some(Some("0"))
    );

    let mut bad = rc.clone();
    bad.virtual_hosts[0].routes[0].stat_prefix = "s".into();
    let err = route_configuration(&any(&bad)).unwrap_err();
    assert!(
        err.contains("RouteConfiguration `rc`")
            && err.contains("routes[0]")
            && err.contains("stat_prefix"),
        "{err}"
    );
}

// A WasmPlugin as istiod renders it for ECDS (pilot/pkg/model/wasm.go).
fn istiod_wasm(env: &[(&str, &str)]) -> Any {
    use envoy_types::pb::envoy::config::core::v3::AsyncDataSource;
    use envoy_types::pb::envoy::config::core::v3::{HttpUri, RemoteDataSource};
    use envoy_types::pb::envoy::extensions::wasm::v3::{
        EnvironmentVariables, PluginConfig, VmConfig,
    };
    let w = Wasm {
        config: Some(PluginConfig {
            name: "istio-system.echo".into(),
            configuration: Some(Any::default()),
            vm: Some(plugin_config::Vm::VmConfig(VmConfig {
                runtime: "envoy.wasm.runtime.v8".into(),
                code: Some(AsyncDataSource {
                    specifier: Some(async_data_source::Specifier::Remote(RemoteDataSource {
                        http_uri: Some(HttpUri {
                            uri: "oci://reg.example/echo:v1".into(),
                            ..Default::default()
                        }),
                        ..Default::default()
                    })),
                }),
                environment_variables: Some(EnvironmentVariables {
                    key_values: env
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                    ..Default::default()
                }),
                ..Default::default()
            })),
            ..Default::default()
        }),
    };
    any(&TypedExtensionConfig {
        name: "echo".into(),
        typed_config: Some(any(&w)),
    })
}

#[test]
fn ecds_takes_wasm_plugins_as_istiod_renders_them() {
    let w = extension(&istiod_wasm(&[
        ("ISTIO_META_WASM_PLUGIN_RESOURCE_VERSION", "7"),
        ("ISTIO_META_WASM_IMAGE_PULL_POLICY", "Always"),
        ("GREETING", "hi"),
    ]))
    .expect("istiod's form is accepted");
    assert_eq!(w.url, "oci://reg.example/echo:v1");
    assert_eq!(w.sha256, None);
    assert!(w.configuration.is_empty());
    assert_eq!(w.pull_policy.as_deref(), Some("Always"));
    assert_eq!(w.resource_version.as_deref(), Some("7"));
    // The agent's variables are not the plugin's.
    assert_eq!(w.env, [("GREETING".to_string(), "hi".to_string())]);

    let err = extension(&istiod_wasm(&[("ISTIO_META_WASM_IMAGE_PULL_SECRET", "s")]))
        .expect_err("no pull secrets yet");
    assert!(err.contains("ISTIO_META_WASM_IMAGE_PULL_SECRET"), "{err}");

    let rbac = any(&TypedExtensionConfig {
        name: "echo".into(),
        typed_config: Some(Any {
            type_url: RBAC_TYPE.into(),
            value: Vec::new(),
        }),
    });
    let err = extension(&rbac).expect_err("RBAC stand-ins are refused");
    assert!(
        err.contains("TypedExtensionConfig `echo`") && err.contains("RBAC"),
        "{err}"
    );
}
