//! The Privacy service (a tenant's policy for its sensors, what it holds per
//! data level, re-identification of pseudonyms) and the sensors' side of the
//! policy: what enrollment hands over and the `Ingest.WatchPolicy` stream.

use crate::auth::{ADMINS, Access, Caller};
use crate::live::Owners;
use crate::{Shared, internal, store_status};
use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use tokio::sync::broadcast;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};
use vigil_proto::v1::privacy_server::Privacy;
use vigil_proto::v1::{
    DataLevel, GetPrivacyRequest, LevelHeld, PrivacyInfo, RedactionPattern, Reidentified,
    ReidentifyRequest, ReidentifyResponse, SensorPolicy, SetPrivacyPolicyRequest,
};
use vigil_pseudonym::{Kind, Pseudonymizer};
use vigil_store::{PrivacyPolicy, Role, TenantRecord};

/// Redaction patterns a tenant may add, at most.
pub(crate) const MAX_PATTERNS: usize = 64;
/// A pattern's name and regular expression, in bytes, at most.
const MAX_PATTERN_BYTES: usize = 1024;
/// Pseudonyms and candidates one re-identification takes, at most.
const MAX_PSEUDONYMS: usize = 100;
const MAX_CANDIDATES: usize = 100_000;
const MAX_CANDIDATE_BYTES: usize = 256;
const MAX_REASON_CHARS: usize = 512;

/// Who may read a tenant's privacy settings and holdings.
const READERS: &[Role] = &[Role::Admin, Role::Auditor];

/// Tells open policy watches that a tenant's policy changed.
#[derive(Debug)]
pub(crate) struct PolicyBus {
    changed: broadcast::Sender<String>,
}

impl Default for PolicyBus {
    fn default() -> Self {
        Self {
            changed: broadcast::channel(256).0,
        }
    }
}

/// A tenant's policy as sensors receive it.
pub(crate) fn sensor_policy(p: &PrivacyPolicy) -> SensorPolicy {
    SensorPolicy {
        version: p.version,
        optional_data: p.optional_data,
        pseudonymize: p.pseudonymize,
        redact: p
            .redact
            .iter()
            .map(|(name, regex)| RedactionPattern {
                name: name.clone(),
                regex: regex.clone(),
            })
            .collect(),
    }
}

/// What enrollment hands a new device of `tenant`: the tenant's pseudonym
/// key and its policy now.
pub(crate) fn for_enrollment(
    shared: &Shared,
    tenant: &str,
) -> Result<(Vec<u8>, SensorPolicy), Status> {
    let key = shared
        .control
        .tenant_pseudonym_key(tenant)
        .map_err(store_status)?;
    let rec = tenant_record(shared, tenant)?;
    Ok((key.to_vec(), sensor_policy(&rec.privacy)))
}

fn tenant_record(shared: &Shared, tenant: &str) -> Result<TenantRecord, Status> {
    shared
        .control
        .tenant(tenant)
        .map_err(internal)?
        .ok_or_else(|| Status::not_found("tenant deleted"))
}

pub(crate) type PolicyStream = Pin<Box<dyn Stream<Item = Result<SensorPolicy, Status>> + Send>>;

/// `Ingest.WatchPolicy` for `device`: the current policy when the sensor
/// holds an older one, then each change, until the device is revoked or the
/// server stops.
pub(crate) fn watch(
    shared: Arc<Shared>,
    device: vigil_store::DeviceRecord,
    held: u64,
) -> PolicyStream {
    // Subscribed before the current policy is read: no change falls between.
    let mut changed = shared.policies.changed.subscribe();
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<SensorPolicy, Status>>(4);
    tokio::spawn(async move {
        let tenant = device.tenant_id.clone();
        let reg = shared.live.register(Owners {
            tenant: tenant.clone(),
            device: Some(device.device_id.clone()),
            token: None,
            grant: None,
        });
        let mut ended = reg.ended.clone();
        let mut sent = held;
        let mut check = true;
        loop {
            if check {
                let s = Arc::clone(&shared);
                let t = tenant.clone();
                let rec = tokio::task::spawn_blocking(move || tenant_record(&s, &t)).await;
                let policy = match rec {
                    Ok(Ok(rec)) => sensor_policy(&rec.privacy),
                    Ok(Err(e)) => {
                        let _ = tx.send(Err(e)).await;
                        break;
                    }
                    Err(e) => {
                        let _ = tx.send(Err(internal(e))).await;
                        break;
                    }
                };
                if policy.version != sent {
                    sent = policy.version;
                    if tx.send(Ok(policy)).await.is_err() {
                        break;
                    }
                }
            }
            check = tokio::select! {
                _ = ended.changed() => {
                    let _ = tx.send(Err(reg.why())).await;
                    break;
                }
                _ = tx.closed() => break,
                c = changed.recv() => match c {
                    Ok(t) => t == tenant,
                    Err(broadcast::error::RecvError::Lagged(_)) => true,
                    Err(broadcast::error::RecvError::Closed) => break,
                },
            };
        }
    });
    Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))
}

/// Checks a tenant's redaction patterns as sensors will compile them.
fn check_patterns(patterns: &[RedactionPattern]) -> Result<Vec<(String, String)>, Status> {
    if patterns.len() > MAX_PATTERNS {
        return Err(Status::invalid_argument(format!(
            "redact: at most {MAX_PATTERNS} patterns, got {}",
            patterns.len()
        )));
    }
    let rules: Vec<(String, String)> = patterns
        .iter()
        .map(|p| (p.name.clone(), p.regex.clone()))
        .collect();
    for (name, regex) in &rules {
        if name.len() + regex.len() > MAX_PATTERN_BYTES {
            return Err(Status::invalid_argument(format!(
                "redact: pattern {name:?} is longer than {MAX_PATTERN_BYTES} bytes"
            )));
        }
    }
    vigil_redact::Redactor::with_rules(&rules)
        .map_err(|e| Status::invalid_argument(format!("redact: {e}")))?;
    Ok(rules)
}

fn level_held(shared: &Shared, tenant: &str) -> Result<Vec<LevelHeld>, Status> {
    let c = shared
        .control
        .tenant_store(tenant)
        .map_err(store_status)?
        .level_counts()
        .map_err(store_status)?;
    Ok(vec![
        LevelHeld {
            level: DataLevel::Required as i32,
            records: c.required_records,
            bytes: c.required_bytes,
        },
        LevelHeld {
            level: DataLevel::Optional as i32,
            records: c.optional_records,
            bytes: c.optional_bytes,
        },
    ])
}

/// Which of `candidates` each pseudonym stands for.
fn reidentify(key: &[u8; 32], pseudonyms: &[String], candidates: &[String]) -> Vec<Reidentified> {
    let p = Pseudonymizer::new(*key);
    let mut by_kind: HashMap<Kind, HashMap<String, &str>> = HashMap::new();
    pseudonyms
        .iter()
        .map(|ps| {
            let Some(kind) = Kind::of_pseudonym(ps) else {
                return Reidentified {
                    pseudonym: ps.clone(),
                    ..Reidentified::default()
                };
            };
            // Each candidate's pseudonym of this kind, made once per call.
            let table = by_kind.entry(kind).or_insert_with(|| {
                candidates
                    .iter()
                    .map(|c| (p.pseudonym(kind, c.as_bytes()), c.as_str()))
                    .collect()
            });
            Reidentified {
                pseudonym: ps.clone(),
                identity: table.get(ps).map(|c| (*c).to_owned()).unwrap_or_default(),
                kind: match kind {
                    Kind::User => "user",
                    Kind::Host => "host",
                }
                .into(),
            }
        })
        .collect()
}

pub(crate) struct PrivacyService {
    pub(crate) shared: Arc<Shared>,
}

impl PrivacyService {
    fn info(&self, tenant: &str) -> Result<PrivacyInfo, Status> {
        let rec = tenant_record(&self.shared, tenant)?;
        Ok(PrivacyInfo {
            policy: Some(sensor_policy(&rec.privacy)),
            held: level_held(&self.shared, tenant)?,
        })
    }

    fn caller<T>(
        &self,
        req: &Request<T>,
        m: &'static str,
        roles: &'static [Role],
    ) -> Result<Caller, Status> {
        self.shared.authorize(req, m, Access::Tenant(roles))
    }
}

#[tonic::async_trait]
impl Privacy for PrivacyService {
    async fn get_privacy(
        &self,
        req: Request<GetPrivacyRequest>,
    ) -> Result<Response<PrivacyInfo>, Status> {
        const M: &str = "Privacy/GetPrivacy";
        let caller = self.caller(&req, M, READERS)?;
        let tenant = caller.tenant()?.to_owned();
        let result = self.info(&tenant).map(Response::new);
        self.shared.audited(&caller, M, None, "", result)
    }

    async fn set_privacy_policy(
        &self,
        req: Request<SetPrivacyPolicyRequest>,
    ) -> Result<Response<PrivacyInfo>, Status> {
        const M: &str = "Privacy/SetPrivacyPolicy";
        let caller = self.caller(&req, M, ADMINS)?;
        let tenant = caller.tenant()?.to_owned();
        let r = req.into_inner();
        let summary = format!(
            "optional_data={} pseudonymize={} redact={:?}",
            r.optional_data,
            r.pseudonymize,
            r.redact.iter().map(|p| p.name.as_str()).collect::<Vec<_>>()
        );
        let result = check_patterns(&r.redact)
            .and_then(|redact| {
                self.shared
                    .control
                    .set_privacy(
                        &tenant,
                        PrivacyPolicy {
                            version: 0,
                            optional_data: r.optional_data,
                            pseudonymize: r.pseudonymize,
                            redact,
                        },
                    )
                    .map_err(store_status)
            })
            .and_then(|_| {
                let _ = self.shared.policies.changed.send(tenant.clone());
                self.info(&tenant)
            })
            .map(Response::new);
        self.shared.audited(&caller, M, None, &summary, result)
    }

    async fn reidentify(
        &self,
        req: Request<ReidentifyRequest>,
    ) -> Result<Response<ReidentifyResponse>, Status> {
        const M: &str = "Privacy/Reidentify";
        let caller = self.caller(&req, M, ADMINS)?;
        let tenant = caller.tenant()?.to_owned();
        let r = req.into_inner();
        // The audit names the pseudonyms and the reason, never the identities.
        let shown: Vec<&str> = r.pseudonyms.iter().take(10).map(String::as_str).collect();
        let summary = format!(
            "pseudonyms={shown:?}{} candidates={} reason={:?}",
            if r.pseudonyms.len() > shown.len() {
                " …"
            } else {
                ""
            },
            r.candidates.len(),
            r.reason.chars().take(MAX_REASON_CHARS).collect::<String>()
        );
        let checked = if r.reason.trim().is_empty() {
            Err(Status::invalid_argument(
                "reason: say why (it is kept in the audit trail)",
            ))
        } else if r.reason.chars().count() > MAX_REASON_CHARS {
            Err(Status::invalid_argument(format!(
                "reason: at most {MAX_REASON_CHARS} characters"
            )))
        } else if r.pseudonyms.is_empty() || r.pseudonyms.len() > MAX_PSEUDONYMS {
            Err(Status::invalid_argument(format!(
                "pseudonyms: 1 to {MAX_PSEUDONYMS}"
            )))
        } else if r.candidates.len() > MAX_CANDIDATES {
            Err(Status::invalid_argument(format!(
                "candidates: at most {MAX_CANDIDATES}"
            )))
        } else if r.candidates.iter().any(|c| c.len() > MAX_CANDIDATE_BYTES) {
            Err(Status::invalid_argument(format!(
                "candidates: each at most {MAX_CANDIDATE_BYTES} bytes"
            )))
        } else {
            Ok(())
        };
        let shared = Arc::clone(&self.shared);
        let result = match checked {
            Err(e) => Err(e),
            Ok(()) => tokio::task::spawn_blocking(move || {
                let key = shared
                    .control
                    .tenant_pseudonym_key(&tenant)
                    .map_err(store_status)?;
                Ok(ReidentifyResponse {
                    results: reidentify(&key, &r.pseudonyms, &r.candidates),
                })
            })
            .await
            .map_err(internal)
            .and_then(|r| r),
        }
        .map(Response::new);
        let found = result
            .as_ref()
            .map(|r| {
                r.get_ref()
                    .results
                    .iter()
                    .filter(|x| !x.identity.is_empty())
                    .count()
            })
            .unwrap_or(0);
        self.shared.audited(
            &caller,
            M,
            None,
            &format!("{summary} found={found}"),
            result,
        )
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn reidentify_answers_each_pseudonym_from_the_candidates() {
        let key = [7u8; 32];
        let p = Pseudonymizer::new(key);
        let alice = p.pseudonym(Kind::User, b"alice");
        let host = p.pseudonym(Kind::Host, b"db-1");
        let other = Pseudonymizer::new([8u8; 32]).pseudonym(Kind::User, b"alice");
        let got = reidentify(
            &key,
            &[alice.clone(), host.clone(), other.clone(), "alice".into()],
            &["bob".into(), "alice".into(), "db-1".into()],
        );
        let pairs: Vec<(&str, &str)> = got
            .iter()
            .map(|r| (r.identity.as_str(), r.kind.as_str()))
            .collect();
        assert_eq!(
            pairs,
            [("alice", "user"), ("db-1", "host"), ("", "user"), ("", "")]
        );
    }

    #[test]
    fn patterns_are_checked_as_sensors_compile_them() {
        let ok = RedactionPattern {
            name: "ticket".into(),
            regex: "TKT-(?P<secret>[0-9]+)".into(),
        };
        assert_eq!(check_patterns(std::slice::from_ref(&ok)).unwrap().len(), 1);
        for bad in [
            RedactionPattern {
                name: "empty".into(),
                regex: "x*".into(),
            },
            RedactionPattern {
                name: "option_value".into(),
                regex: "TKT-[0-9]+".into(),
            },
            RedactionPattern {
                name: "bad name".into(),
                regex: "TKT-[0-9]+".into(),
            },
            RedactionPattern {
                name: "broken".into(),
                regex: "(?P<secret>[".into(),
            },
            RedactionPattern {
                name: "".into(),
                regex: "(?P<secret>x)".into(),
            },
        ] {
            let e = check_patterns(std::slice::from_ref(&bad)).unwrap_err();
            assert_eq!(e.code(), tonic::Code::InvalidArgument, "{bad:?}");
        }
        let many = vec![ok; MAX_PATTERNS + 1];
        assert!(check_patterns(&many).is_err());
    }
}
