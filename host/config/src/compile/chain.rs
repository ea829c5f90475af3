//! The filter chain of a listener: the plugins that apply, their scoped rules and the
//! built-in filters' generated configurations.

use super::*;

/// A WasmPlugin as loaded for this snapshot.
pub(super) struct Loaded {
    pub(super) spec: Arc<PluginSpec>,
    /// `pluginConfig`, the default configuration.
    pub(super) config: Bytes,
    pub(super) info: Arc<DocInfo>,
    /// `targetRefs` Gateways; empty: every listener.
    pub(super) gateways: Vec<String>,
    /// `matchRules`, and whether the default is off (`defaultConfigDisable`).
    pub(super) rules: Option<(scope::Rules, bool)>,
}

impl Loaded {
    pub(super) fn needs_route(&self) -> bool {
        self.rules.as_ref().is_some_and(|(r, _)| {
            r.iter()
                .any(|r| !r.routes.is_empty() || !r.services.is_empty())
        })
    }

    /// Its filter on a listener whose route table is `routes`.
    pub(super) fn filter(&self, routes: &Option<Arc<RouteTable>>) -> FilterSpec {
        FilterSpec {
            plugin: self.spec.clone(),
            configuration: self.config.clone(),
            scope: self.rules.as_ref().map(|(rules, off)| {
                Arc::new(lateen_model::scope::Scope {
                    rules: rules.clone(),
                    default: (!off).then(|| self.config.clone()),
                    routes: routes.clone(),
                })
            }),
        }
    }
}

/// A listener as WasmPlugin `match` and `targetRefs` see it.
pub(super) struct ListenerAt<'a> {
    pub(super) class: lateen_model::ListenerClass,
    pub(super) port: u16,
    /// The Gateways (`namespace/name`) whose servers it serves.
    pub(super) gateways: &'a BTreeSet<String>,
}

impl ListenerAt<'_> {
    pub(super) fn takes(&self, l: &Loaded) -> bool {
        l.spec.applies_to(self.class, self.port)
            && (l.gateways.is_empty() || l.gateways.iter().any(|g| self.gateways.contains(g)))
    }
}

/// The rules of a scoped plugin: each rule's configuration is checked on its own, and a
/// refused one keeps its configuration from `previous` (rule isolation).
#[allow(clippy::too_many_arguments)]
pub(super) fn scoped_rules(
    res: &Resources,
    wp: &Doc<WasmPluginSpec>,
    spec: &Arc<PluginSpec>,
    sc: &scope::ScopeConfig,
    clusters: &HashMap<String, Arc<lateen_model::ClusterSpec>>,
    previous: Option<&Snapshot>,
    rt: &Runtime,
    resolver: &Arc<dyn lateen_wasm::ClusterResolver>,
    warnings: &mut Vec<String>,
    rule_errors: &mut Vec<ConfigError>,
) -> scope::Rules {
    let hosts: BTreeSet<String> = res
        .virtual_services
        .iter()
        .flat_map(|v| v.spec.hosts.iter().cloned())
        .collect();
    let services: BTreeSet<&str> = clusters
        .keys()
        .map(|c| lateen_model::scope::cluster_host(c))
        .collect();
    let before: Option<&lateen_model::scope::Scope> = previous.and_then(|p| {
        p.listeners
            .iter()
            .flat_map(|l| &l.filters)
            .find(|f| f.plugin.name == spec.name && f.scope.is_some())
            .and_then(|f| f.scope.as_deref())
    });
    let mut out = Vec::new();
    for rc in &sc.rules {
        let ids = scope::route_ids(&wp.info, rc, &res.virtual_services, warnings);
        scope::check_selectors(&wp.info, rc, &hosts, &services, warnings);
        let violation = match (&spec.schema, &rc.config) {
            (Some(schema), Some(cfg)) => {
                let value: serde_json::Value = serde_json::from_slice(cfg).unwrap_or_default();
                schema.check(Some(&value)).into_iter().next()
            }
            _ => None,
        };
        let refused = |err: ConfigError, rule_errors: &mut Vec<ConfigError>| {
            let last = before.and_then(|b| b.rules.iter().find(|r| r.key == rc.key()));
            let action = scope::isolate(&err.message, last);
            let shown = err.to_string();
            rule_errors.push(err);
            (action, Some(shown))
        };
        let (action, error) = match (&rc.config, violation) {
            (None, _) => (lateen_model::scope::RuleAction::Disable, None),
            (Some(_), Some(v)) => refused(
                wp.info.error(
                    &format!("{}.config{}", rc.field(), v.field),
                    format!("violates the plugin's config schema: {}", v.message),
                ),
                rule_errors,
            ),
            (Some(cfg), None) => match probe(rt, spec, cfg, resolver.clone()) {
                Ok(()) => (lateen_model::scope::RuleAction::Config(cfg.clone()), None),
                Err(e) => refused(
                    wp.info
                        .error(&format!("{}.config", rc.field()), e.to_string()),
                    rule_errors,
                ),
            },
        };
        out.push(scope::rule(rc, ids, action, error));
    }
    Arc::new(out)
}

/// The built-in filters of one build, each loaded once: the router always, and the
/// rate-limit, JWT, authorization and metrics filters where the config asks for them.
pub(super) struct Builtins {
    router: Option<Arc<PluginSpec>>,
    rate_limits: RateLimitConfig,
    ratelimit: Option<Arc<PluginSpec>>,
    jwt: Option<FilterSpec>,
    authz: Option<FilterSpec>,
    metrics: Option<FilterSpec>,
}

impl Builtins {
    pub(super) fn load(
        res: &Resources,
        workload: &WorkloadInfo,
        clusters: &HashMap<String, Arc<ClusterSpec>>,
        tls_ctx: &TlsContext,
        (rt, opts): (&Runtime, &BuildOptions),
        errors: &mut Vec<ConfigError>,
    ) -> Self {
        let router = load_router(rt, &opts.builtin_filters)
            .map_err(|e| errors.push(e))
            .ok();
        let (rate_limits, ratelimit) = ratelimit_filter(res, workload, rt, opts, errors);
        Builtins {
            router,
            rate_limits,
            ratelimit,
            jwt: jwt_filter(res, workload, clusters, tls_ctx, rt, opts, errors),
            authz: authz_filter(res, workload, rt, opts, errors),
            metrics: metrics_filter(res, workload, rt, opts, errors),
        }
    }

    /// A sidecar's chains are outbound: JWT and authorization policies, which govern its
    /// inbound side, are refused rather than applied to the wrong direction.
    pub(super) fn refuse_inbound(&mut self, res: &Resources, errors: &mut Vec<ConfigError>) {
        refuse_inbound_policies(res, self.authz.is_some(), self.jwt.is_some(), errors);
        self.jwt = None;
        self.authz = None;
    }

    pub(super) fn chain<'a>(
        &'a self,
        rt: &'a Runtime,
        opts: &'a BuildOptions,
        plugins: &'a [Loaded],
    ) -> ChainParts<'a> {
        ChainParts {
            rt,
            opts,
            plugins,
            jwt: &self.jwt,
            authz: &self.authz,
            router: &self.router,
            ratelimit: self.ratelimit.as_ref().map(|f| (f, &self.rate_limits)),
            metrics: &self.metrics,
        }
    }

    /// The plugins these filters run (for `/plugins`), with the fault filter if a chain
    /// loaded it; in the order `/plugins` has always listed them.
    pub(super) fn into_plugins(
        self,
        fault: Option<Arc<PluginSpec>>,
    ) -> impl Iterator<Item = Arc<PluginSpec>> {
        self.router
            .into_iter()
            .chain(self.ratelimit)
            .chain(fault)
            .chain(self.authz.map(|a| a.plugin))
            .chain(self.jwt.map(|j| j.plugin))
            .chain(self.metrics.map(|m| m.plugin))
    }
}

/// The filters every HTTP listener's chain is made of, in Istio's order.
pub(super) struct ChainParts<'a> {
    pub(super) rt: &'a Runtime,
    pub(super) opts: &'a BuildOptions,
    pub(super) plugins: &'a [Loaded],
    pub(super) jwt: &'a Option<FilterSpec>,
    pub(super) authz: &'a Option<FilterSpec>,
    pub(super) router: &'a Option<Arc<PluginSpec>>,
    pub(super) ratelimit: Option<(&'a Arc<PluginSpec>, &'a RateLimitConfig)>,
    pub(super) metrics: &'a Option<FilterSpec>,
}

impl ChainParts<'_> {
    /// A listener's chain: WasmPlugins by phase, JWT and authorization where Istio puts
    /// jwt_authn and RBAC, the router with `vhosts`, rate limits, faults (loading the
    /// fault filter on first use) and metrics.
    pub(super) fn assemble(
        &self,
        listener: ListenerAt<'_>,
        vhosts: Vec<VirtualHostConfig>,
        faults: &FaultConfig,
        fault_filter: &mut Option<Arc<PluginSpec>>,
        errors: &mut Vec<ConfigError>,
    ) -> Vec<FilterSpec> {
        let (rt, opts) = (self.rt, self.opts);
        let router_cfg = RouterConfig {
            virtual_hosts: vhosts,
        };
        // Scoped plugins before the router look a request's route up in this table.
        let routes = self
            .plugins
            .iter()
            .any(|l| l.needs_route() && listener.takes(l))
            .then(|| RouteTable::compile(&router_cfg).ok().map(Arc::new))
            .flatten();
        let mut filters: Vec<FilterSpec> = self
            .plugins
            .iter()
            .filter(|l| l.spec.placement.is_none() && listener.takes(l))
            .map(|l| l.filter(&routes))
            .collect();
        // Istio's order: AUTHN plugins, jwt_authn, AUTHZ plugins, RBAC, then the rest.
        if let Some(j) = self.jwt {
            let at = filters
                .iter()
                .position(|f| f.plugin.phase > Phase::Authn)
                .unwrap_or(filters.len());
            filters.insert(at, j.clone());
        }
        if let Some(a) = self.authz {
            let at = filters
                .iter()
                .position(|f| f.plugin.phase > Phase::Authz)
                .unwrap_or(filters.len());
            filters.insert(at, a.clone());
        }
        if let Some(router) = self.router {
            match serde_json::to_vec(&router_cfg) {
                Ok(json) => filters.push(FilterSpec {
                    plugin: router.clone(),
                    configuration: Bytes::from(json),
                    scope: None,
                }),
                Err(e) => errors.push(ConfigError {
                    file: PathBuf::new(),
                    doc: 0,
                    line: 0,
                    resource: None,
                    field: String::new(),
                    message: format!("cannot encode router configuration: {e}"),
                }),
            }
        }
        if let Some((f, json)) = self
            .ratelimit
            .and_then(|(f, rl)| Some((f, serde_json::to_vec(rl).ok()?)))
        {
            filters.push(FilterSpec {
                plugin: f.clone(),
                configuration: Bytes::from(json),
                scope: None,
            });
        }
        if !faults.routes.is_empty() {
            if fault_filter.is_none() {
                match load_builtin(rt, &opts.builtin_filters, "fault", Phase::PostRoute) {
                    Ok(f) => *fault_filter = Some(f),
                    Err(e) => errors.push(e),
                }
            }
            if let (Some(f), Ok(json)) = (&*fault_filter, serde_json::to_vec(faults)) {
                filters.push(FilterSpec {
                    plugin: f.clone(),
                    configuration: Bytes::from(json),
                    scope: None,
                });
            }
        }
        if let Some(m) = self.metrics {
            filters.push(m.clone());
        }
        self.place(&mut filters, &listener, &routes);
        filters
    }

    /// Inserts the plugins with a `lateen.io/placement` next to their built-in filter, in
    /// phase and priority order among themselves. A built-in that is not in this chain (no
    /// faults configured, metrics off) still has its place: before the next built-in that
    /// is there, or at the end.
    pub(super) fn place(
        &self,
        filters: &mut Vec<FilterSpec>,
        listener: &ListenerAt<'_>,
        routes: &Option<Arc<RouteTable>>,
    ) {
        let index_of = |filters: &[FilterSpec], b: lateen_model::Builtin| {
            filters
                .iter()
                .position(|f| f.plugin.name == b.plugin_name())
        };
        let mut after_count: HashMap<lateen_model::Builtin, usize> = HashMap::new();
        for l in self.plugins {
            let Some(place) = l.spec.placement else {
                continue;
            };
            if !listener.takes(l) {
                continue;
            }
            let spec = l.filter(routes);
            let at = match index_of(filters, place.anchor) {
                Some(i) if place.before => i,
                Some(i) => {
                    let n = after_count.entry(place.anchor).or_default();
                    *n += 1;
                    i + *n
                }
                None => lateen_model::Builtin::ALL
                    .into_iter()
                    .filter(|b| *b > place.anchor)
                    .find_map(|b| index_of(filters, b))
                    .unwrap_or(filters.len()),
            };
            filters.insert(at.min(filters.len()), spec);
        }
    }
}

/// The `fault` settings of the http routes of `vss`, by route id.
pub(super) fn route_faults<'a>(
    vss: impl Iterator<Item = &'a Doc<VirtualServiceSpec>>,
    errors: &mut Vec<ConfigError>,
) -> FaultConfig {
    let mut faults = FaultConfig::default();
    for vs in vss {
        for (i, http) in vs.spec.http.iter().enumerate() {
            let Some(f) = &http.fault else { continue };
            match route_fault(f) {
                Ok(rf) => {
                    faults.routes.insert(format!("{}#{i}", vs.info.key()), rf);
                }
                Err((field, msg)) => {
                    errors.push(vs.info.error(&format!("spec.http[{i}].fault.{field}"), msg))
                }
            }
        }
    }
    faults
}
