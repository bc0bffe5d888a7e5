//! What the governance and alert tests share: a real server over TLS with an
//! injected clock, an operator, and tenants, tokens and devices made over
//! gRPC as an operator and admins would.

#![allow(dead_code, clippy::unwrap_used)]

use super::TestServer;
use std::sync::Arc;
use tokio_stream::StreamExt;
use tonic::transport::{Channel, Identity};
use vigil_proto::v1::{
    self as pb, CreateApiTokenRequest, CreateEnrollmentTokenRequest, CreateTenantRequest,
    Detection, EnrollRequest, ListAlertsRequest, ListAuditEntriesRequest, ProcessRef, Record,
    RecordBatch, admin_client::AdminClient, alerts_client::AlertsClient, audit_client::AuditClient,
    ingest_client::IngestClient, operator_client::OperatorClient, record::Payload,
};
use vigil_store::{ManualClock, Role};

/// A request with a bearer token and, for an operator under a grant, a tenant.
pub fn req<T>(msg: T, token: &str, tenant: Option<&str>) -> tonic::Request<T> {
    let mut r = super::with_token(msg, token);
    if let Some(t) = tenant {
        r.metadata_mut()
            .insert(vigil_server::TENANT_HEADER, t.parse().unwrap());
    }
    r
}

pub struct Fixture {
    pub server: TestServer,
    pub clock: Arc<ManualClock>,
    pub operator: String,
    pub ch: Channel,
}

pub struct Tenant {
    pub id: String,
    pub admin: String,
}

pub struct Device {
    pub id: String,
    pub identity: Identity,
}

impl Fixture {
    pub async fn start() -> Fixture {
        Fixture::start_with(|_| {}).await
    }

    pub async fn start_with(configure: impl FnOnce(&mut vigil_server::ServerConfig)) -> Fixture {
        let clock = Arc::new(ManualClock::now());
        let server = TestServer::start_with_options(
            configure,
            vigil_server::BindOptions {
                clock: Some(clock.clone()),
                keys: None,
            },
        )
        .await;
        // What `vigil-server operator-token` does to bootstrap a deployment.
        let (operator, _) = server
            .control
            .create_api_token(None, Role::Operator, "ops on call", 0, "test")
            .unwrap();
        let ch = server.channel(None).await.unwrap();
        Fixture {
            server,
            clock,
            operator,
            ch,
        }
    }

    pub fn op(&self) -> OperatorClient<Channel> {
        OperatorClient::new(self.ch.clone())
    }
    pub fn admin(&self) -> AdminClient<Channel> {
        AdminClient::new(self.ch.clone())
    }
    pub fn alerts(&self) -> AlertsClient<Channel> {
        AlertsClient::new(self.ch.clone())
    }
    pub fn audit(&self) -> AuditClient<Channel> {
        AuditClient::new(self.ch.clone())
    }
    pub fn hunt(&self) -> vigil_proto::v1::hunt_client::HuntClient<Channel> {
        vigil_proto::v1::hunt_client::HuntClient::new(self.ch.clone())
    }

    /// Sends `records` in batches of at most 1,000 on one stream; returns the last ack.
    pub async fn send_records(
        &self,
        d: &Device,
        records: Vec<vigil_proto::v1::Record>,
    ) -> pb::BatchAck {
        let mut ingest = self.server.ingest(Some(d.identity.clone())).await;
        let batches: Vec<vigil_proto::v1::RecordBatch> = records
            .chunks(1000)
            .enumerate()
            .map(|(i, c)| vigil_proto::v1::RecordBatch {
                batch_id: i as u64 + 1,
                records: c.to_vec(),
            })
            .collect();
        let n = batches.len();
        let mut acks = ingest
            .stream(tokio_stream::iter(batches))
            .await
            .unwrap()
            .into_inner();
        let mut last = None;
        for _ in 0..n {
            last = Some(acks.next().await.unwrap().unwrap());
        }
        last.unwrap()
    }

    pub async fn tenant(&self, name: &str) -> Tenant {
        let r = self
            .op()
            .create_tenant(req(
                CreateTenantRequest {
                    name: name.into(),
                    region: String::new(),
                    retention_days: 0,
                },
                &self.operator,
                None,
            ))
            .await
            .unwrap()
            .into_inner();
        let t = r.tenant.unwrap();
        assert_eq!((t.region.as_str(), t.retention_days), ("local", 90));
        Tenant {
            id: t.tenant_id,
            admin: r.admin_token,
        }
    }

    pub async fn token(&self, t: &Tenant, role: pb::Role) -> (String, String) {
        let r = self
            .admin()
            .create_api_token(req(
                CreateApiTokenRequest {
                    name: format!("{role:?}"),
                    role: role as i32,
                    expires_days: 0,
                },
                &t.admin,
                None,
            ))
            .await
            .unwrap()
            .into_inner();
        (r.token, r.info.unwrap().token_id)
    }

    pub async fn device(&self, t: &Tenant) -> Device {
        let token = self
            .admin()
            .create_enrollment_token(req(
                CreateEnrollmentTokenRequest { valid_hours: 1 },
                &t.admin,
                None,
            ))
            .await
            .unwrap()
            .into_inner()
            .token;
        let (key, csr) = vigil_pki::device_key_and_csr("host").unwrap();
        let resp = IngestClient::new(self.ch.clone())
            .enroll(EnrollRequest {
                enrollment_token: token,
                csr_pem: csr,
                host: None,
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(resp.tenant_id, t.id);
        Device {
            id: resp.device_id,
            identity: Identity::from_pem(resp.certificate_pem, key),
        }
    }

    /// Sends one batch with a detection whose command line is `marker`; waits for its ack.
    pub async fn detect(&self, d: &Device, seq: u64, marker: &str) {
        let mut ingest = self.server.ingest(Some(d.identity.clone())).await;
        let mut acks = ingest
            .stream(tokio_stream::iter(vec![detection_batch(seq, marker)]))
            .await
            .unwrap()
            .into_inner();
        let ack = acks.next().await.unwrap().unwrap();
        assert_eq!(ack.stored_through, seq);
    }

    pub async fn alert_ids(
        &self,
        token: &str,
        tenant: Option<&str>,
    ) -> Result<Vec<String>, tonic::Status> {
        Ok(self
            .alerts()
            .list_alerts(req(ListAlertsRequest::default(), token, tenant))
            .await?
            .into_inner()
            .alerts
            .into_iter()
            .map(|a| a.id)
            .collect())
    }

    /// Entries of the log the token may read (its tenant's, or the deployment's).
    pub async fn audit_entries(&self, token: &str) -> Vec<pb::AuditEntry> {
        let mut out = Vec::new();
        let mut after = 0;
        loop {
            let r = self
                .audit()
                .list_audit_entries(req(
                    ListAuditEntriesRequest {
                        after_seq: after,
                        limit: 1000,
                        ..Default::default()
                    },
                    token,
                    None,
                ))
                .await
                .unwrap()
                .into_inner();
            out.extend(r.entries);
            if r.next_after_seq == 0 {
                return out;
            }
            after = r.next_after_seq;
        }
    }
}

pub fn detection_batch(seq: u64, marker: &str) -> RecordBatch {
    RecordBatch {
        batch_id: seq,
        records: vec![Record {
            sequence: seq,
            time_unix_ns: 1,
            payload: Some(Payload::Detection(Detection {
                rule_id: "r1".into(),
                rule_title: "Test rule".into(),
                level: "high".into(),
                // A process of its own: detections of one rule aggregate per process tree.
                process: Some(ProcessRef {
                    guid: format!("proc-{seq}"),
                    pid: 7,
                    command_line: marker.into(),
                    ..Default::default()
                }),
                ..Default::default()
            })),
            ..Default::default()
        }],
    }
}
