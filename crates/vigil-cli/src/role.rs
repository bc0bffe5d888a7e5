//! Roles as people write them (`operator`, `admin`, `analyst`, `auditor`,
//! `read-only`) and as the schema sends them (`vigil.v1.Role`).

use anyhow::Result;
use vigil_proto::v1::Role;

/// The name a person reads and writes for a role.
pub fn name(role: Role) -> &'static str {
    match role {
        Role::Operator => "operator",
        Role::Admin => "admin",
        Role::Analyst => "analyst",
        Role::Auditor => "auditor",
        Role::ReadOnly => "read-only",
        Role::Unspecified => "unspecified",
    }
}

/// The name of a role as it arrives in a message (an unknown number is `unspecified`).
pub fn name_of(role: i32) -> &'static str {
    name(Role::try_from(role).unwrap_or(Role::Unspecified))
}

/// Parses a role name, ignoring case; `read_only`, `readonly` and the
/// schema's own names (`ROLE_ADMIN`) are accepted too.
pub fn parse(s: &str) -> Result<Role> {
    let lower = s.trim().to_ascii_lowercase().replace('_', "-");
    let bare = lower.strip_prefix("role-").unwrap_or(&lower);
    Ok(match bare {
        "operator" => Role::Operator,
        "admin" => Role::Admin,
        "analyst" => Role::Analyst,
        "auditor" => Role::Auditor,
        "read-only" | "readonly" => Role::ReadOnly,
        _ => anyhow::bail!("unknown role `{s}` (operator, admin, analyst, auditor, read-only)"),
    })
}

/// A role given inside a tenant (`vigil token create --role`): the operator
/// role is not one a tenant admin can hand out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TenantRole {
    Admin,
    Analyst,
    Auditor,
    ReadOnly,
}

impl From<TenantRole> for Role {
    fn from(r: TenantRole) -> Role {
        match r {
            TenantRole::Admin => Role::Admin,
            TenantRole::Analyst => Role::Analyst,
            TenantRole::Auditor => Role::Auditor,
            TenantRole::ReadOnly => Role::ReadOnly,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::ValueEnum;

    const ALL: [Role; 5] = [
        Role::Operator,
        Role::Admin,
        Role::Analyst,
        Role::Auditor,
        Role::ReadOnly,
    ];

    #[test]
    fn every_role_parses_back_from_its_name() {
        for r in ALL {
            assert_eq!(parse(name(r)).unwrap(), r);
            assert_eq!(name_of(r as i32), name(r));
        }
    }

    #[test]
    fn names_are_the_documented_ones() {
        assert_eq!(
            ALL.map(name),
            ["operator", "admin", "analyst", "auditor", "read-only"]
        );
    }

    #[test]
    fn other_spellings_parse() {
        assert_eq!(parse("READ_ONLY").unwrap(), Role::ReadOnly);
        assert_eq!(parse("readonly").unwrap(), Role::ReadOnly);
        assert_eq!(parse("ROLE_ADMIN").unwrap(), Role::Admin);
        assert_eq!(parse(" Auditor ").unwrap(), Role::Auditor);
    }

    #[test]
    fn unknown_roles_are_refused_with_the_choices() {
        for bad in ["", "root", "unspecified", "role-"] {
            let e = parse(bad).unwrap_err().to_string();
            assert!(
                e.contains("operator, admin, analyst, auditor, read-only"),
                "{e}"
            );
        }
        assert_eq!(name_of(99), "unspecified");
    }

    #[test]
    fn tenant_roles_on_the_command_line_match_the_role_names() {
        for r in TenantRole::value_variants() {
            let written = r.to_possible_value().unwrap().get_name().to_owned();
            assert_eq!(written, name(Role::from(*r)));
        }
    }
}
