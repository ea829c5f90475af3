//! One request's passage through a chain ([`HttpStream`]): each phase's callbacks in
//! chain order (the response in reverse), pauses and resumes, local replies, and the log
//! phase when the stream ends.

use super::*;

#[derive(Clone)]
pub(super) enum Ctx {
    NotCreated,
    /// A stream context on the instance it was created on (which may be draining since),
    /// and the root it runs under, kept until the stream is done.
    Live {
        id: u32,
        inst: Rc<Instance>,
        root: Rc<RootRef>,
    },
    /// The plugin failed open for this stream: skip it.
    Skipped,
}

#[derive(Clone, Copy)]
pub(super) enum Phase {
    RequestHeaders,
    RequestBody,
    RequestTrailers,
    ResponseHeaders,
    ResponseBody,
    ResponseTrailers,
}

impl Phase {
    pub(super) fn response(self) -> bool {
        matches!(
            self,
            Phase::ResponseHeaders | Phase::ResponseBody | Phase::ResponseTrailers
        )
    }
}

/// Longest a plugin may keep a stream paused waiting on nothing the host knows about.
pub(super) const PAUSE_LIMIT: Duration = Duration::from_secs(30);

/// One request's passage through the chain.
pub struct HttpStream {
    pub(super) chain: Rc<Chain>,
    pub(super) ctxs: Vec<Ctx>,
    pub state: Box<StreamState>,
    /// A local reply a plugin sent while the request body streamed upstream.
    pub early_reply: Option<LocalResponse>,
    pub(super) upstream: Rc<Upstream>,
    /// Filters served by their canary version for this stream (bit i = filter i).
    pub(super) canary: u64,
    /// Canary filters that failed during this stream.
    pub(super) canary_failed: u64,
    /// Where the stream is logged when it ends.
    pub access_log: Option<Arc<crate::access_log::AccessLog>>,
    /// This proxy's span for the stream, ended when the stream ends.
    pub trace: Option<(Arc<crate::trace::Tracer>, crate::trace::SpanStart)>,
}

impl HttpStream {
    /// `random` samples canary versions for this stream.
    pub fn new(chain: Rc<Chain>, state: StreamState, upstream: Rc<Upstream>, random: u64) -> Self {
        let n = chain.filters.len();
        let mut canary = 0u64;
        for (i, f) in chain.filters.iter().enumerate().take(64) {
            if let Some(c) = &f.canary {
                if c.rollout.pick(random.rotate_left(i as u32 * 7)) {
                    canary |= 1 << i;
                }
            }
        }
        HttpStream {
            chain,
            ctxs: vec![Ctx::NotCreated; n],
            state: Box::new(state),
            early_reply: None,
            upstream,
            canary,
            canary_failed: 0,
            access_log: None,
            trace: None,
        }
    }

    pub(super) fn uses_canary(&self, i: usize) -> bool {
        i < 64 && self.canary & (1 << i) != 0
    }

    // The instances, root cache and rule root caches serving filter i for this stream.
    pub(super) fn slot_of(&self, i: usize) -> (&Rc<VmSlot>, &RootCache, &[RootCache]) {
        let f = &self.chain.filters[i];
        match (&f.canary, self.uses_canary(i)) {
            (Some(c), true) => (&c.slot, &c.root, &c.rule_roots),
            _ => (&f.slot, &f.root, &f.rule_roots),
        }
    }

    pub async fn request_headers(&mut self, eos: bool) -> Verdict {
        self.run(Phase::RequestHeaders, eos).await
    }

    pub async fn request_body(&mut self, eos: bool) -> Verdict {
        self.run(Phase::RequestBody, eos).await
    }

    pub async fn request_trailers(&mut self) -> Verdict {
        self.run(Phase::RequestTrailers, true).await
    }

    pub async fn response_headers(&mut self, eos: bool) -> Verdict {
        self.run(Phase::ResponseHeaders, eos).await
    }

    pub async fn response_body(&mut self, eos: bool) -> Verdict {
        self.run(Phase::ResponseBody, eos).await
    }

    pub async fn response_trailers(&mut self) -> Verdict {
        self.run(Phase::ResponseTrailers, true).await
    }

    pub(super) fn fail(&mut self, i: usize, err: &dyn std::fmt::Display) -> Option<Verdict> {
        if self.uses_canary(i) {
            self.canary_failed |= 1 << i;
        }
        let spec = &self.slot_of(i).0.spec;
        tracing::warn!(plugin = %spec.name, "plugin failed: {err}");
        match spec.fail {
            FailStrategy::Open => {
                self.ctxs[i] = Ctx::Skipped;
                None
            }
            FailStrategy::Close => {
                self.ctxs[i] = Ctx::Skipped;
                Some(Verdict::Respond(LocalResponse {
                    status: 503,
                    details: "wasm_fail_stream".into(),
                    body: Bytes::from_static(b"plugin failed"),
                    headers: Vec::new(),
                    grpc_status: -1,
                }))
            }
        }
    }

    // The configuration filter i runs with for this stream and its root cache: the default,
    // or the first matching `matchRules` entry. `Ok(None)`: the plugin is off here.
    pub(super) fn config_of(&mut self, i: usize) -> Result<Option<(Bytes, Option<usize>)>, String> {
        let f = &self.chain.filters[i];
        let Some(scope) = f.scope.clone() else {
            return Ok(f.default.clone().map(|c| (c, None)));
        };
        match scope.choose_for(&mut self.state) {
            Choice::Default => Ok(self.chain.filters[i].default.clone().map(|c| (c, None))),
            Choice::Rule(r) => match &scope.rules[r].action {
                RuleAction::Config(c) => Ok(Some((c.clone(), Some(r)))),
                RuleAction::Disable => Ok(None),
                RuleAction::Failed(e) => Err(format!("{}: {e}", scope.rules[r].label)),
            },
        }
    }

    // The context of filter i for this stream and its instance, created on first use.
    pub(super) fn context(&mut self, i: usize) -> Result<Option<(u32, Rc<Instance>)>, String> {
        let rule = match self.ctxs[i] {
            Ctx::NotCreated => match self.config_of(i)? {
                Some(c) => Some(c),
                None => {
                    self.ctxs[i] = Ctx::Skipped;
                    return Ok(None);
                }
            },
            _ => None,
        };
        let (slot, default_root, rule_roots) = self.slot_of(i);
        match &self.ctxs[i] {
            Ctx::Skipped => Ok(None),
            // A trapped instance refuses the call, which fails the plugin for the stream.
            Ctx::Live { id, inst, .. } => Ok(Some((*id, inst.clone()))),
            Ctx::NotCreated => {
                let inst = slot.instance().map_err(|e| e.to_string())?;
                let (config, rule) = rule.ok_or("no configuration")?;
                let cell = match rule {
                    None => default_root,
                    Some(r) => rule_roots.get(r).ok_or("no root cache for the rule")?,
                };
                let cached = cell
                    .borrow()
                    .as_ref()
                    .filter(|r| r.generation == inst.generation)
                    .cloned();
                let root = match cached {
                    Some(r) => r,
                    None => {
                        let r = slot.root(&inst, &config).map_err(|e| e.to_string())?;
                        // Replacing a root of an older instance drops the chain's hold on
                        // it; its streams still hold it.
                        *cell.borrow_mut() = Some(r.clone());
                        r
                    }
                };
                let id = inst
                    .vm
                    .borrow_mut()
                    .create_stream(root.id)
                    .map_err(|e| e.to_string())?;
                inst.streams.set(inst.streams.get() + 1);
                self.ctxs[i] = Ctx::Live {
                    id,
                    inst: inst.clone(),
                    root,
                };
                Ok(Some((id, inst)))
            }
        }
    }

    pub(super) async fn run(&mut self, phase: Phase, eos: bool) -> Verdict {
        let n = self.chain.filters.len();
        let order: Box<dyn Iterator<Item = usize>> = if phase.response() {
            Box::new((0..n).rev())
        } else {
            Box::new(0..n)
        };
        for i in order {
            let (ctx, inst) = match self.context(i) {
                Ok(Some(c)) => c,
                Ok(None) => continue,
                Err(e) => match self.fail(i, &e) {
                    Some(v) => return v,
                    None => continue,
                },
            };
            let slot = self.slot_of(i).0.clone();
            let result = {
                let mut vm = inst.vm.borrow_mut();
                let st = &mut self.state;
                let r = match phase {
                    Phase::RequestHeaders => vm.on_request_headers(ctx, st, eos),
                    Phase::ResponseHeaders => vm.on_response_headers(ctx, st, eos),
                    Phase::RequestBody => vm.on_body(ctx, st, false, eos),
                    Phase::ResponseBody => vm.on_body(ctx, st, true, eos),
                    Phase::RequestTrailers => vm.on_trailers(ctx, st, false),
                    Phase::ResponseTrailers => vm.on_trailers(ctx, st, true),
                };
                r.map(|a| (a, vm.take_pending_calls()))
            };
            let (mut action, calls) = match result {
                Ok(r) => r,
                Err(e) => match self.fail(i, &e) {
                    Some(v) => return v,
                    None => continue,
                },
            };
            slot.after_call_with(&inst, Vec::new());
            if let Some(lr) = self.state.local_response.take() {
                return Verdict::Respond(lr);
            }
            if action == Action::Pause || !calls.is_empty() {
                match self.drive_calls(i, &inst, calls, phase, action).await {
                    Ok(a) => action = a,
                    Err(v) => return v,
                }
            }
            if action == Action::Pause {
                // Body pauses buffer until the end of the stream.
                if matches!(phase, Phase::RequestBody | Phase::ResponseBody) && !eos {
                    return Verdict::Buffer;
                }
                // Otherwise another context (a tick, a call answer) resumes the stream.
                match wait_resume(&inst, ctx, PAUSE_LIMIT).await {
                    Some(Wake::Resume) => {}
                    Some(Wake::Local(lr)) => return Verdict::Respond(lr),
                    None => {
                        let e = format!("stream paused for more than {PAUSE_LIMIT:?}");
                        if let Some(v) = self.fail(i, &e) {
                            return v;
                        }
                    }
                }
            }
        }
        Verdict::Continue
    }

    // Runs the http_calls a callback issued (concurrently), delivers each answer, and reports
    // whether the plugin resumed the stream. Err carries a verdict that ends the stream.
    pub(super) async fn drive_calls(
        &mut self,
        i: usize,
        inst: &Rc<Instance>,
        mut calls: Vec<PendingCall>,
        phase: Phase,
        mut action: Action,
    ) -> Result<Action, Verdict> {
        let slot = self.slot_of(i).0.clone();
        let resumed = |st: &mut StreamState| {
            if phase.response() {
                std::mem::take(&mut st.resume_response)
            } else {
                std::mem::take(&mut st.resume_request)
            }
        };
        let deadline = tokio::time::Instant::now() + PAUSE_LIMIT;
        while !calls.is_empty() {
            let up = self.upstream.clone();
            let futs: Vec<_> = calls
                .iter()
                .map(|c| {
                    let up = up.clone();
                    async move { up.http_call(c).await }
                })
                .collect();
            let answers =
                match tokio::time::timeout_at(deadline, futures_util::future::join_all(futs)).await
                {
                    Ok(a) => a,
                    Err(_) => (0..calls.len()).map(|_| None).collect(),
                };
            let mut next = Vec::new();
            for (call, resp) in calls.drain(..).zip(answers) {
                let r = {
                    let mut vm = inst.vm.borrow_mut();
                    let r = vm.on_http_call_response(
                        call.context_id,
                        call.token,
                        &mut self.state,
                        resp,
                    );
                    r.map(|()| vm.take_pending_calls())
                };
                slot.after_call_with(inst, Vec::new());
                match r {
                    Ok(more) => next.extend(more),
                    Err(e) => {
                        return match self.fail(i, &e) {
                            Some(v) => Err(v),
                            None => Ok(Action::Continue),
                        }
                    }
                }
                if let Some(lr) = self.state.local_response.take() {
                    return Err(Verdict::Respond(lr));
                }
                if resumed(&mut self.state) {
                    action = Action::Continue;
                }
            }
            calls = next;
        }
        Ok(action)
    }

    /// Records a local reply's outcome, with the flags a filter set (`lateen.response_flags`)
    /// and the details it gave (`proxy_send_local_response`).
    pub fn set_local_outcome(&mut self, lr: &LocalResponse) {
        let flags = self
            .state
            .props
            .get("lateen.response_flags")
            .map(|f| String::from_utf8_lossy(f).into_owned())
            .unwrap_or_else(|| "-".into());
        self.set_outcome(lr.status, &flags);
        if !lr.details.is_empty() {
            self.state.response_code_details = lr.details.clone();
        }
    }

    /// Records how the stream ended, for `response.*` properties in on_log and the access
    /// log: `-` flags mean the upstream answered.
    pub fn set_outcome(&mut self, code: u16, flags: &str) {
        self.state.response_code = Some(code);
        if !flags.is_empty() {
            self.state.response_flags = flags.to_string();
        }
        self.state.response_code_details = match flags {
            "-" | "" => "via_upstream",
            f => lateen_model::access_log::details_for_flags(f),
        }
        .to_string();
    }
}

/// The log phase runs when the stream ends, however it ended (a response, a local reply
/// from any filter, a fault abort, a rate limit, an upstream failure, a client reset or a
/// dropped connection): dropping the stream is the one thing every ending shares.
impl Drop for HttpStream {
    fn drop(&mut self) {
        self.log_phase();
    }
}

impl HttpStream {
    /// The log phase: every filter of the chain sees the end of the stream (`on_done`,
    /// `on_log`, `on_delete`), as Envoy calls each filter's log callback for every stream.
    /// A filter the stream never reached (a filter before it answered locally) gets its
    /// context now, so that a metrics filter counts fault aborts, rate limits, denials and
    /// plugin replies. Then the access log and the trace span.
    pub(super) fn log_phase(&mut self) {
        for i in 0..self.ctxs.len() {
            if matches!(self.ctxs[i], Ctx::NotCreated) {
                if let Err(e) = self.context(i) {
                    let name = &self.slot_of(i).0.spec.name;
                    tracing::debug!(plugin = %name, "no context for the log phase: {e}");
                }
            }
        }
        for (i, f) in self.chain.filters.iter().enumerate() {
            if let (Some(c), true) = (&f.canary, self.uses_canary(i)) {
                c.rollout
                    .record(self.canary_failed & (1 << i) != 0, self.state.response_code);
            }
        }
        for i in 0..self.ctxs.len() {
            // The root outlives the borrow of the VM below, so it ends after the stream.
            let Ctx::Live {
                id,
                inst,
                root: _root,
            } = std::mem::replace(&mut self.ctxs[i], Ctx::Skipped)
            else {
                continue;
            };
            inst.waiters.borrow_mut().remove(&id);
            inst.early.borrow_mut().remove(&id);
            if inst.broken() {
                continue;
            }
            let Ok(mut vm) = inst.vm.try_borrow_mut() else {
                continue;
            };
            if let Err(e) = vm.finish_stream(id, &mut self.state) {
                let name = &self.slot_of(i).0.spec.name;
                tracing::warn!(plugin = %name, "plugin failed at end of stream: {e}");
            }
        }
        if let Some(log) = &self.access_log {
            log.record(&self.state);
        }
        if let Some((tracer, span)) = &self.trace {
            tracer.finish(span, &self.state);
        }
    }
}
