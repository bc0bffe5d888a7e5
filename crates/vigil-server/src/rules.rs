//! The Rules service: rule sets published per tenant, and their distribution
//! to the tenant's sensors.
//!
//! A published set is compiled here (`vigil-rules`, the same engine the
//! sensors run): any rejection refuses the whole set with each rule's file
//! and line, and nothing changes. An accepted set is stored as a bundle (the
//! accepted documents, already validated) as the tenant's next version,
//! sealed in its store. Sensors keep `WatchRules` open over their device
//! certificate: the current version is sent at once when theirs differs, then
//! every publish or rollback as it happens; each message a sensor sends says
//! what it runs, which `ListDevices` shows.
//!
//! Who: admins and analysts publish and roll back (rule authors); readers
//! list versions; an operator under a grant (read-only) never publishes.

use crate::auth::{Access, READERS};
use crate::live::Owners;
use crate::{Shared, internal, store_status};
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use tokio::sync::broadcast;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};
use vigil_proto::v1::{
    ListRuleVersionsRequest, ListRuleVersionsResponse, PublishRulesRequest, PublishRulesResponse,
    RollbackRulesRequest, RuleSetInfo, RuleSetUpdate, RulesRunning, rules_server,
};
use vigil_rules::RuleSet;
use vigil_store::{Role, RuleSetVersion, RuleSets};

/// Who may publish and roll back.
const AUTHORS: &[Role] = &[Role::Admin, Role::Analyst];
/// Files in one published set, at most.
pub(crate) const MAX_FILES: usize = 10_000;
/// Rejections named in a refusal, at most (the rest are counted).
const MAX_NAMED: usize = 50;

/// Published sets and the signal that tells open watches about a new version.
pub(crate) struct Distribution {
    pub(crate) sets: RuleSets,
    /// (tenant, version) of every publish and rollback: sensors' watches and
    /// the tenant-wide correlations (`correlate.rs`) listen.
    pub(crate) published: broadcast::Sender<(String, u64)>,
}

impl Default for Distribution {
    fn default() -> Self {
        Distribution {
            sets: RuleSets::new(),
            published: broadcast::channel(64).0,
        }
    }
}

pub(crate) struct RulesService {
    pub(crate) shared: Arc<Shared>,
}

fn info(v: &RuleSetVersion, current: u64) -> RuleSetInfo {
    RuleSetInfo {
        version: v.version,
        published_unix_ns: v.published_unix_ns,
        author: v.author.clone(),
        files: v.files,
        rules: v.rules,
        bytes: v.bytes,
        copied_from: v.copied_from,
        current: v.version == current,
    }
}

/// Compiles the files; a bundle and its rule count, or the refusal naming
/// each rejected rule's file and line.
fn compile(req: &PublishRulesRequest) -> Result<(String, u32, usize), Status> {
    if req.files.is_empty() {
        return Err(Status::invalid_argument("no rule files"));
    }
    if req.files.len() > MAX_FILES {
        return Err(Status::invalid_argument(format!(
            "at most {MAX_FILES} files in one rule set"
        )));
    }
    let mut set = RuleSet::for_bundle();
    let mut report = vigil_rules::LoadReport::default();
    for f in &req.files {
        set.load_str(Path::new(&f.path), &f.text, &mut report);
    }
    set.check_references(&mut report);
    if !report.rejected.is_empty() {
        let mut lines: Vec<String> = report
            .rejected
            .iter()
            .take(MAX_NAMED)
            .map(ToString::to_string)
            .collect();
        if report.rejected.len() > MAX_NAMED {
            lines.push(format!(
                "and {} more rejections",
                report.rejected.len() - MAX_NAMED
            ));
        }
        return Err(Status::invalid_argument(format!(
            "{} rule(s) rejected; nothing was published:\n{}",
            report.rejected.len(),
            lines.join("\n")
        )));
    }
    if report.loaded == 0 {
        return Err(Status::invalid_argument("the files hold no rule"));
    }
    let bundle = set
        .to_bundle()
        .ok_or_else(|| Status::internal("the compiled set kept no documents"))?;
    let rules = set.rules().len() + set.correlations().len();
    Ok((
        bundle,
        u32::try_from(rules).unwrap_or(u32::MAX),
        report.loaded,
    ))
}

type UpdateStream = Pin<Box<dyn Stream<Item = Result<RuleSetUpdate, Status>> + Send>>;

#[tonic::async_trait]
impl rules_server::Rules for RulesService {
    async fn publish_rules(
        &self,
        req: Request<PublishRulesRequest>,
    ) -> Result<Response<PublishRulesResponse>, Status> {
        const M: &str = "Rules/PublishRules";
        let caller = self.shared.authorize(&req, M, Access::Tenant(AUTHORS))?;
        let tenant = caller.tenant()?.to_owned();
        let req = req.into_inner();
        let files = req.files.len();
        let bytes: usize = req.files.iter().map(|f| f.text.len()).sum();
        let shared = Arc::clone(&self.shared);
        let author = caller.token.name.clone();
        let t = tenant.clone();
        let result = tokio::task::spawn_blocking(move || {
            let (bundle, rules, loaded) = compile(&req)?;
            let meta = RuleSetVersion {
                version: 0,
                published_unix_ns: 0,
                author,
                files: u32::try_from(files).unwrap_or(u32::MAX),
                rules,
                bytes: 0,
                copied_from: 0,
            };
            let v = shared
                .rules
                .sets
                .publish(&shared.control, &t, meta, bundle.as_bytes())
                .map_err(store_status)?;
            Ok((v, loaded))
        })
        .await
        .map_err(internal)
        .and_then(|r| r);
        let summary = match &result {
            Ok((v, _)) => format!(
                "files={files} bytes={bytes} version={} rules={}",
                v.version, v.rules
            ),
            Err(_) => format!("files={files} bytes={bytes}"),
        };
        if let Ok((v, _)) = &result {
            tracing::info!(tenant = %tenant, version = v.version, rules = v.rules, "Rule set published");
            let _ = self.shared.rules.published.send((tenant, v.version));
        }
        let result = result.map(|(v, loaded)| {
            Response::new(PublishRulesResponse {
                published: Some(info(&v, v.version)),
                loaded: u32::try_from(loaded).unwrap_or(u32::MAX),
            })
        });
        self.shared.audited(&caller, M, None, &summary, result)
    }

    async fn list_rule_versions(
        &self,
        req: Request<ListRuleVersionsRequest>,
    ) -> Result<Response<ListRuleVersionsResponse>, Status> {
        const M: &str = "Rules/ListRuleVersions";
        let caller = self.shared.authorize(&req, M, Access::Tenant(READERS))?;
        let tenant = caller.tenant()?.to_owned();
        let shared = Arc::clone(&self.shared);
        let result = tokio::task::spawn_blocking(move || {
            shared.rules.sets.versions(&shared.control, &tenant)
        })
        .await
        .map_err(internal)
        .and_then(|r| r.map_err(store_status))
        .map(|vs| {
            let current = vs.last().map(|v| v.version).unwrap_or(0);
            Response::new(ListRuleVersionsResponse {
                versions: vs.iter().map(|v| info(v, current)).collect(),
            })
        });
        self.shared.audited(&caller, M, None, "", result)
    }

    async fn rollback_rules(
        &self,
        req: Request<RollbackRulesRequest>,
    ) -> Result<Response<RuleSetInfo>, Status> {
        const M: &str = "Rules/RollbackRules";
        let caller = self.shared.authorize(&req, M, Access::Tenant(AUTHORS))?;
        let tenant = caller.tenant()?.to_owned();
        let from = req.into_inner().version;
        let shared = Arc::clone(&self.shared);
        let author = caller.token.name.clone();
        let t = tenant.clone();
        let result = tokio::task::spawn_blocking(move || {
            let sets = &shared.rules.sets;
            let (old, content) = sets
                .get(&shared.control, &t, from)
                .map_err(store_status)?
                .ok_or_else(|| Status::not_found(format!("no rule set version {from}")))?;
            let meta = RuleSetVersion {
                author,
                copied_from: from,
                ..old
            };
            sets.publish(&shared.control, &t, meta, &content)
                .map_err(store_status)
        })
        .await
        .map_err(internal)
        .and_then(|r| r);
        let summary = match &result {
            Ok(v) => format!("from={from} version={}", v.version),
            Err(_) => format!("from={from}"),
        };
        if let Ok(v) = &result {
            tracing::info!(tenant = %tenant, version = v.version, from, "Rule set rolled back");
            let _ = self.shared.rules.published.send((tenant, v.version));
        }
        let result = result.map(|v| Response::new(info(&v, v.version)));
        self.shared.audited(&caller, M, None, &summary, result)
    }

    type WatchRulesStream = UpdateStream;

    async fn watch_rules(
        &self,
        req: Request<Streaming<RulesRunning>>,
    ) -> Result<Response<UpdateStream>, Status> {
        let device = crate::ingest::device_of(&self.shared, &req)?;
        let mut inbound = req.into_inner();
        let shared = Arc::clone(&self.shared);
        // Subscribed before the current version is read: no publish falls between.
        let mut published = shared.rules.published.subscribe();
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<RuleSetUpdate, Status>>(4);
        tokio::spawn(async move {
            let tenant = device.tenant_id.clone();
            let reg = shared.live.register(Owners {
                tenant: tenant.clone(),
                device: Some(device.device_id.clone()),
                token: None,
                grant: None,
            });
            let mut ended = reg.ended.clone();
            // The published version the sensor runs, once it said; the last sent.
            let mut have: Option<u64> = None;
            let mut sent: Option<u64> = None;
            loop {
                // Which version to send now, if any.
                let send: Option<u64> = tokio::select! {
                    _ = ended.changed() => {
                        let _ = tx.send(Err(reg.why())).await;
                        break;
                    }
                    next = inbound.next() => match next {
                        None | Some(Err(_)) => break,
                        Some(Ok(running)) => {
                            let s = Arc::clone(&shared);
                            let (t, d, v) = (tenant.clone(), device.device_id.clone(), running.version.clone());
                            let saved = tokio::task::spawn_blocking(move || s.rules.sets.set_running(&s.control, &t, &d, &v)).await;
                            if !matches!(saved, Ok(Ok(()))) {
                                tracing::warn!(device = %device.device_id, "Cannot record the rule set a sensor runs");
                            }
                            let first = have.is_none();
                            have = Some(running.published_version);
                            // The first message: the current version, when it differs.
                            first.then_some(0)
                        }
                    },
                    p = published.recv() => match p {
                        Ok((t, v)) if t == tenant => Some(v),
                        Ok(_) => None,
                        // Missed some: send whatever is current.
                        Err(broadcast::error::RecvError::Lagged(_)) => Some(0),
                        Err(broadcast::error::RecvError::Closed) => break,
                    },
                };
                let (Some(want), Some(running)) = (send, have) else {
                    continue;
                };
                let s = Arc::clone(&shared);
                let t = tenant.clone();
                let got = tokio::task::spawn_blocking(move || {
                    if want == 0 {
                        s.rules.sets.current(&s.control, &t)
                    } else {
                        s.rules.sets.get(&s.control, &t, want)
                    }
                })
                .await;
                let (meta, bundle) = match got {
                    Ok(Ok(Some(x))) => x,
                    Ok(Ok(None)) => continue,
                    Ok(Err(e)) => {
                        let _ = tx.send(Err(store_status(e))).await;
                        break;
                    }
                    Err(e) => {
                        let _ = tx.send(Err(internal(e))).await;
                        break;
                    }
                };
                // The current version read for the sensor's first message and
                // the publish that made it can both arrive: send it once.
                if meta.version == running || sent == Some(meta.version) {
                    continue;
                }
                sent = Some(meta.version);
                let update = RuleSetUpdate {
                    version: meta.version,
                    bundle: bundle.to_vec(),
                };
                if tx.send(Ok(update)).await.is_err() {
                    break;
                }
            }
            drop(reg);
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }
}
