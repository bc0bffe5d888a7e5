//! Authenticated gRPC clients for every service (Alerts, Operator, Admin,
//! Audit, Hunt, Privacy, Transfer), and gRPC errors as people read them.
//!
//! Every call carries `authorization: Bearer <token>`; an operator working in
//! a tenant under an approved access grant adds `x-vigil-tenant: <tenant_id>`
//! (the global `--tenant` option). The server decides what the token may do;
//! nothing here checks roles.

use crate::profile::Profile;
use anyhow::{Context, Result};
use tonic::Code;
use tonic::metadata::AsciiMetadataValue;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use vigil_proto::v1::{
    admin_client::AdminClient, alerts_client::AlertsClient, audit_client::AuditClient,
    hunt_client::HuntClient, operator_client::OperatorClient, privacy_client::PrivacyClient,
    transfer_client::TransferClient,
};

/// The header that names the tenant an operator's call is about.
pub const TENANT_HEADER: &str = "x-vigil-tenant";

/// Adds the bearer token, and the tenant when one was chosen, to every call.
#[derive(Clone)]
pub struct Auth {
    bearer: AsciiMetadataValue,
    tenant: Option<AsciiMetadataValue>,
}

impl Auth {
    /// `tenant` is sent as `x-vigil-tenant` when given (`--tenant`), never otherwise.
    pub fn new(token: &str, tenant: Option<&str>) -> Result<Auth> {
        let mut bearer: AsciiMetadataValue = format!("Bearer {token}")
            .parse()
            .context("the profile's token is not a valid header value")?;
        // Keeps the secret out of logs that print headers (tonic/hyper tracing).
        bearer.set_sensitive(true);
        let tenant = tenant
            .map(|t| {
                t.parse()
                    .with_context(|| format!("tenant id `{t}` is not a valid header value"))
            })
            .transpose()?;
        Ok(Auth { bearer, tenant })
    }
}

impl tonic::service::Interceptor for Auth {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        let m = req.metadata_mut();
        m.insert("authorization", self.bearer.clone());
        if let Some(t) = &self.tenant {
            m.insert(TENANT_HEADER, t.clone());
        }
        Ok(req)
    }
}

/// A channel whose calls carry [`Auth`].
pub type AuthChannel = InterceptedService<Channel, Auth>;

/// One connection to the server and the credentials for it; hands out a
/// client per service (they share the connection).
#[derive(Clone)]
pub struct Api {
    channel: Channel,
    auth: Auth,
}

impl Api {
    /// Connects to the profile's server (TLS, verified against its CA).
    pub async fn connect(profile: &Profile, tenant: Option<&str>) -> Result<Api> {
        let auth = Auth::new(&profile.token, tenant)?;
        Ok(Api::new(profile.channel().await?, auth))
    }

    /// Over a channel made elsewhere (a test's in-memory transport, say).
    pub fn new(channel: Channel, auth: Auth) -> Api {
        Api { channel, auth }
    }

    pub fn authed(&self) -> AuthChannel {
        InterceptedService::new(self.channel.clone(), self.auth.clone())
    }

    pub fn alerts(&self) -> AlertsClient<AuthChannel> {
        AlertsClient::new(self.authed())
    }

    pub fn operator(&self) -> OperatorClient<AuthChannel> {
        OperatorClient::new(self.authed())
    }

    pub fn admin(&self) -> AdminClient<AuthChannel> {
        AdminClient::new(self.authed())
    }

    pub fn audit(&self) -> AuditClient<AuthChannel> {
        AuditClient::new(self.authed())
    }

    pub fn hunt(&self) -> HuntClient<AuthChannel> {
        HuntClient::new(self.authed())
    }

    pub fn privacy(&self) -> PrivacyClient<AuthChannel> {
        PrivacyClient::new(self.authed())
    }

    /// Its requests carry a whole bundle: past tonic's default 4 MiB.
    pub fn transfer(&self) -> TransferClient<AuthChannel> {
        TransferClient::new(self.authed())
            .max_encoding_message_size(vigil_bundle::MAX_BUNDLE_BYTES + 64 * 1024)
    }
}

/// A call the server refused or that failed: shown as `<code>: <message>`
/// (`permission denied: admin role required`), not as a debug dump.
#[derive(Debug)]
pub struct RpcError {
    pub code: Code,
    pub message: String,
}

impl std::fmt::Display for RpcError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.message.is_empty() {
            f.write_str(code_name(self.code))
        } else {
            // The message is the server's text: no terminal control characters.
            let message = crate::display::clean(&self.message);
            write!(f, "{}: {message}", code_name(self.code))
        }
    }
}

impl std::error::Error for RpcError {}

/// A status as an error for `?`: `.map_err(rpc)`.
pub fn rpc(status: tonic::Status) -> anyhow::Error {
    RpcError {
        code: status.code(),
        message: status.message().to_owned(),
    }
    .into()
}

/// A gRPC code in words (tonic's `Display` gives a whole sentence instead).
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "ok",
        Code::Cancelled => "cancelled",
        Code::Unknown => "unknown",
        Code::InvalidArgument => "invalid argument",
        Code::DeadlineExceeded => "deadline exceeded",
        Code::NotFound => "not found",
        Code::AlreadyExists => "already exists",
        Code::PermissionDenied => "permission denied",
        Code::ResourceExhausted => "resource exhausted",
        Code::FailedPrecondition => "failed precondition",
        Code::Aborted => "aborted",
        Code::OutOfRange => "out of range",
        Code::Unimplemented => "unimplemented",
        Code::Internal => "internal",
        Code::Unavailable => "unavailable",
        Code::DataLoss => "data loss",
        Code::Unauthenticated => "unauthenticated",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::service::Interceptor;

    fn intercepted(auth: &mut Auth) -> tonic::metadata::MetadataMap {
        auth.call(tonic::Request::new(())).unwrap().into_parts().0
    }

    #[test]
    fn every_call_carries_the_bearer_token() {
        let m = intercepted(&mut Auth::new("vgl_abc", None).unwrap());
        assert_eq!(m.get("authorization").unwrap(), "Bearer vgl_abc");
    }

    #[test]
    fn the_tenant_header_is_sent_only_when_a_tenant_is_given() {
        let m = intercepted(&mut Auth::new("vgl_abc", None).unwrap());
        assert!(m.get(TENANT_HEADER).is_none());
        assert_eq!(m.len(), 1);

        let m = intercepted(&mut Auth::new("vgl_abc", Some("acme-7f3a")).unwrap());
        assert_eq!(m.get(TENANT_HEADER).unwrap(), "acme-7f3a");
        assert_eq!(m.get("authorization").unwrap(), "Bearer vgl_abc");
    }

    #[test]
    fn values_that_cannot_be_headers_are_refused_before_any_call() {
        assert!(Auth::new("bad\ntoken", None).is_err());
        let e = Auth::new("t", Some("a\nb")).err().unwrap().to_string();
        assert!(e.contains("tenant id"), "{e}");
    }

    #[test]
    fn the_token_is_marked_sensitive() {
        let m = intercepted(&mut Auth::new("vgl_abc", None).unwrap());
        assert!(m.get("authorization").unwrap().is_sensitive());
    }

    #[test]
    fn a_status_reads_as_code_and_message() {
        let e = rpc(tonic::Status::permission_denied("admin role required"));
        assert_eq!(e.to_string(), "permission denied: admin role required");
        assert_eq!(format!("{e:#}"), "permission denied: admin role required");
        assert_eq!(
            rpc(tonic::Status::unauthenticated("")).to_string(),
            "unauthenticated"
        );
        let wrapped = rpc(tonic::Status::not_found("no tenant t9")).context("GetTenant t9");
        assert_eq!(
            format!("{wrapped:#}"),
            "GetTenant t9: not found: no tenant t9"
        );
    }
}
