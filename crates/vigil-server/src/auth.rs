//! Who is calling and what they may do. Every API call presents a bearer
//! token; its role and tenant decide. A tenant is never taken from the
//! caller's message: it comes from the token, or — for an operator only —
//! from the `x-vigil-tenant` header, and then only under an access grant the
//! tenant's admin approved. Every refusal is written to the audit trail.

use crate::Shared;
use crate::audit::Who;
use tonic::{Request, Status};
use vigil_store::{ApiToken, Role, TokenCheck};

/// The header an operator names a tenant with, under a grant.
pub const TENANT_HEADER: &str = "x-vigil-tenant";

/// What a method needs.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Access {
    /// The deployment operator.
    Operator,
    /// A tenant's data: these roles, and an operator under an approved grant
    /// (as read-only) when `Role::ReadOnly` is among them.
    Tenant(&'static [Role]),
    /// A tenant's audit log (admin, auditor), or the deployment's (operator).
    Audit,
}

pub(crate) const READERS: &[Role] = &[Role::Admin, Role::Analyst, Role::ReadOnly];
pub(crate) const ADMINS: &[Role] = &[Role::Admin];
/// Who may change an alert: not read-only, nor an operator under a grant.
pub(crate) const ANALYSTS: &[Role] = &[Role::Admin, Role::Analyst];

/// An authenticated, authorized caller.
#[derive(Debug, Clone)]
pub(crate) struct Caller {
    pub(crate) token: ApiToken,
    /// The role this call acts with (read-only for an operator under a grant).
    pub(crate) role: Role,
    /// The tenant this call acts in; `None` for the operator's own calls.
    pub(crate) tenant: Option<String>,
    /// The grant an operator acts under.
    pub(crate) grant: Option<String>,
    pub(crate) peer: String,
    /// When the call arrived (for its latency metric).
    pub(crate) started: std::time::Instant,
}

impl Caller {
    pub(crate) fn who(&self) -> Who {
        Who {
            actor: self.token.name.clone(),
            actor_id: self.token.id.clone(),
            role: match &self.grant {
                Some(g) => format!("operator under {g}"),
                None => self.role.name().to_owned(),
            },
            home_tenant: self.token.tenant_id.clone(),
            peer: self.peer.clone(),
        }
    }

    /// The tenant the call acts in (every tenant-scoped call has one).
    pub(crate) fn tenant(&self) -> Result<&str, Status> {
        self.tenant
            .as_deref()
            .ok_or_else(|| Status::internal("no tenant"))
    }
}

pub(crate) fn peer_of<T>(req: &Request<T>) -> String {
    req.remote_addr().map(|a| a.to_string()).unwrap_or_default()
}

fn bearer<T>(req: &Request<T>) -> Result<&str, Status> {
    let header = req
        .metadata()
        .get("authorization")
        .ok_or_else(|| Status::unauthenticated("missing `authorization: Bearer <token>`"))?;
    header
        .to_str()
        .ok()
        .and_then(|h| {
            h.strip_prefix("Bearer ")
                .or_else(|| h.strip_prefix("bearer "))
        })
        .map(str::trim)
        .filter(|t| !t.is_empty() && t.len() <= 256)
        .ok_or_else(|| Status::unauthenticated("authorization must be `Bearer <token>`"))
}

fn named_tenant<T>(req: &Request<T>) -> Result<Option<String>, Status> {
    match req.metadata().get(TENANT_HEADER) {
        None => Ok(None),
        Some(v) => v
            .to_str()
            .ok()
            .filter(|s| !s.is_empty() && s.len() <= 64)
            .map(|s| Some(s.to_owned()))
            .ok_or_else(|| Status::invalid_argument(format!("malformed {TENANT_HEADER}"))),
    }
}

impl Shared {
    /// Authenticates the call's token and checks `access` for `method`.
    /// Refusals are audited (and counted) here.
    pub(crate) fn authorize<T>(
        &self,
        req: &Request<T>,
        method: &'static str,
        access: Access,
    ) -> Result<Caller, Status> {
        let peer = peer_of(req);
        let anonymous = |peer: &str| Who::anonymous(peer);
        let secret = match bearer(req) {
            Ok(s) => s,
            Err(s) => {
                self.refused(&anonymous(&peer), method, None, "", &s, "unauthenticated");
                return Err(s);
            }
        };
        let check = self
            .control
            .check_api_token(secret)
            .map_err(crate::internal)?;
        let token = match check {
            TokenCheck::Valid(t) => t,
            TokenCheck::Unknown => {
                let s = Status::unauthenticated("invalid API token");
                self.refused(&anonymous(&peer), method, None, "", &s, "unauthenticated");
                return Err(s);
            }
            TokenCheck::Revoked(t) | TokenCheck::Expired(t) => {
                let what = if t.revoked_unix_ns != 0 {
                    "revoked"
                } else {
                    "expired"
                };
                let s = Status::unauthenticated(format!("API token {} is {what}", t.id));
                let who = Caller::unchecked(t, &peer).who();
                let home = who.home_tenant.clone();
                self.refused(&who, method, home.as_deref(), "", &s, "revoked");
                return Err(s);
            }
        };
        let named = match named_tenant(req) {
            Ok(n) => n,
            Err(s) => {
                let who = Caller::unchecked(token, &peer).who();
                self.refused(&who, method, None, "", &s, "invalid_argument");
                return Err(s);
            }
        };
        let decide = || -> Result<Caller, Status> {
            let caller = |role, tenant, grant| Caller {
                token: token.clone(),
                role,
                tenant,
                grant,
                peer: peer.clone(),
                started: std::time::Instant::now(),
            };
            match (access, token.role, &token.tenant_id) {
                (Access::Operator, Role::Operator, None) => Ok(caller(Role::Operator, None, None)),
                (Access::Audit, Role::Operator, None) if named.is_none() => {
                    Ok(caller(Role::Operator, None, None))
                }
                (Access::Tenant(roles), Role::Operator, None)
                    if roles.contains(&Role::ReadOnly) =>
                {
                    let Some(tenant) = named.clone() else {
                        return Err(Status::permission_denied(format!(
                            "an operator reads tenant data only under an access grant: name the tenant in {TENANT_HEADER}"
                        )));
                    };
                    match self
                        .control
                        .active_grant(&token.id, &tenant)
                        .map_err(crate::internal)?
                    {
                        Some(g) => Ok(caller(Role::ReadOnly, Some(tenant), Some(g.id))),
                        None => Err(Status::permission_denied(format!(
                            "no approved, unexpired access grant for tenant {tenant}: ask its admin (RequestAccess)"
                        ))),
                    }
                }
                (_, Role::Operator, _) => Err(Status::permission_denied(format!(
                    "{method} is not an operator call"
                ))),
                (_, role, Some(home)) => {
                    if named.as_ref().is_some_and(|n| n != home) {
                        return Err(Status::permission_denied(
                            "a token acts only in its own tenant",
                        ));
                    }
                    let allowed = match access {
                        Access::Operator => false,
                        Access::Tenant(roles) => roles.contains(&role),
                        Access::Audit => matches!(role, Role::Admin | Role::Auditor),
                    };
                    if !allowed {
                        return Err(Status::permission_denied(format!(
                            "the {} role may not call {method}",
                            role.name()
                        )));
                    }
                    Ok(caller(role, Some(home.clone()), None))
                }
                (_, _, None) => Err(Status::permission_denied("token has no tenant")),
            }
        };
        match decide() {
            Ok(c) => Ok(c),
            Err(s) => {
                let who = Caller::unchecked(token.clone(), &peer).who();
                // The tenant whose data was asked for hears of it too.
                let target = named.as_deref().or(token.tenant_id.as_deref());
                self.refused(&who, method, target, "", &s, "permission_denied");
                Err(s)
            }
        }
    }
}

impl Caller {
    /// A caller whose token was read but not accepted: for auditing refusals.
    fn unchecked(token: ApiToken, peer: &str) -> Caller {
        Caller {
            role: token.role,
            tenant: token.tenant_id.clone(),
            token,
            grant: None,
            peer: peer.to_owned(),
            started: std::time::Instant::now(),
        }
    }
}
