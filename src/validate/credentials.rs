//! Credential checks per step.
//!
//! Takes a workflow (or late segment), its summary and the credential
//! issuance records of its trace, and produces for every step its effective
//! credential, its violations and whether its tool is a write action. The
//! effective credential is the one the step names with
//! `agent_ledger.credential.id`, else the root's. Checks never reject a
//! workflow: the violations are stored on the rows beside the spans.
//!
//! - `credential_not_yet_valid` / `credential_expired`: the step started
//!   before the credential's `issued_at`, or at or after its `expires_at`.
//!   The start time is the moment the step acted under the credential.
//! - `unknown_credential`: the step names a credential that neither the root
//!   nor an issuance record of the trace declares.
//! - `scope_violation`: the step's tool requires a scope (by the tool rules
//!   of the policy) that the credential lacks.
//! - `scope_exceeds_issuance`: the root declares scopes beyond those of the
//!   credential's issuance record (flagged on the root step).

use std::fmt;
use std::sync::Arc;

use globset::{Glob, GlobSet, GlobSetBuilder};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::Credential;
use crate::preset::StepKind;
use crate::span::Span;
use crate::workflow::{Step, Workflow};

/// Attribute that marks a span of the issuing service as an issuance record
/// when its value is [`ISSUED`].
pub const CREDENTIAL_EVENT: &str = "agent_ledger.credential.event";

/// The value of [`CREDENTIAL_EVENT`] on an issuance record.
pub const ISSUED: &str = "issued";

/// Violation codes of the `agent_spans.Violations` column.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Violation {
    CredentialExpired,
    CredentialNotYetValid,
    UnknownCredential,
    ScopeViolation,
    ScopeExceedsIssuance,
}

impl Violation {
    /// The code stored in ClickHouse.
    pub fn code(self) -> &'static str {
        match self {
            Violation::CredentialExpired => "credential_expired",
            Violation::CredentialNotYetValid => "credential_not_yet_valid",
            Violation::UnknownCredential => "unknown_credential",
            Violation::ScopeViolation => "scope_violation",
            Violation::ScopeExceedsIssuance => "scope_exceeds_issuance",
        }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// The credential an issuance record describes, when `span` is one.
pub fn issuance(span: &Span) -> Option<Credential> {
    let event = span.attributes.get_text(CREDENTIAL_EVENT)?;
    if event.trim() != ISSUED {
        return None;
    }
    Credential::of(span)
}

/// One tool rule of the policy.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToolRule {
    /// Glob over tool names (`gen_ai.tool.name`), such as `delete_*` or
    /// `orders.*`; `*` and `?` match any characters, `[abc]` a class.
    pub tool: String,
    /// Scopes the credential must hold for the tool.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// Whether the tool changes data (fills `WriteAction`).
    #[serde(default)]
    pub write: bool,
}

/// The policy's tool rules with their globs compiled. Every rule whose glob
/// matches a tool applies: the required scopes add up, and one write rule
/// makes the tool a write action.
#[derive(Clone, Default)]
pub struct ToolRules {
    rules: Vec<ToolRule>,
    globs: Arc<GlobSet>,
}

impl ToolRules {
    /// Compiles `rules`; the error names the glob that is invalid.
    pub fn new(rules: Vec<ToolRule>) -> Result<Self, String> {
        let mut builder = GlobSetBuilder::new();
        for rule in &rules {
            let glob = Glob::new(&rule.tool).map_err(|error| {
                format!("invalid tool glob {:?} in policy.tools: {error}", rule.tool)
            })?;
            builder.add(glob);
        }
        let globs = builder
            .build()
            .map_err(|error| format!("invalid tool globs in policy.tools: {error}"))?;
        Ok(ToolRules {
            rules,
            globs: Arc::new(globs),
        })
    }

    /// The rules as configured.
    pub fn rules(&self) -> &[ToolRule] {
        &self.rules
    }

    fn matching(&self, tool: &str) -> impl Iterator<Item = &ToolRule> {
        self.globs
            .matches(tool)
            .into_iter()
            .map(|index| &self.rules[index])
    }

    /// Scopes `tool` requires, in rule order, without repeats.
    pub fn required_scopes(&self, tool: &str) -> Vec<&str> {
        let mut scopes: Vec<&str> = Vec::new();
        for scope in self.matching(tool).flat_map(|rule| rule.scopes.iter()) {
            if !scopes.contains(&scope.as_str()) {
                scopes.push(scope);
            }
        }
        scopes
    }

    /// Whether a rule marks `tool` as a write action.
    pub fn is_write(&self, tool: &str) -> bool {
        self.matching(tool).any(|rule| rule.write)
    }
}

impl fmt::Debug for ToolRules {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(&self.rules).finish()
    }
}

impl PartialEq for ToolRules {
    fn eq(&self, other: &Self) -> bool {
        self.rules == other.rules
    }
}

impl Serialize for ToolRules {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.rules.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for ToolRules {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let rules = Vec::<ToolRule>::deserialize(deserializer)?;
        ToolRules::new(rules).map_err(serde::de::Error::custom)
    }
}

/// The outcome of the credential checks for one step.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StepCheck {
    /// The step's effective credential, shared by the steps that act under
    /// the same one.
    pub credential: Arc<Credential>,
    pub violations: Vec<Violation>,
    pub write_action: bool,
}

/// Checks every step of `workflow`, in step order. `root` is the
/// workflow's credential (from the root span), `issued` the issuance
/// records seen in the trace.
pub fn check_steps(
    workflow: &Workflow,
    root: &Credential,
    issued: &[Credential],
    tools: &ToolRules,
) -> Vec<StepCheck> {
    let root = Arc::new(with_issuance(root.clone(), issued));
    workflow
        .steps
        .iter()
        .map(|step| check_step(step, &root, issued, tools))
        .collect()
}

fn check_step(
    step: &Step,
    root: &Arc<Credential>,
    issued: &[Credential],
    tools: &ToolRules,
) -> StepCheck {
    let (credential, declared) = effective_credential(step, root, issued);
    let mut check = StepCheck {
        credential,
        ..StepCheck::default()
    };
    if step.kind == StepKind::Context {
        return check;
    }
    if !declared {
        check.violations.push(Violation::UnknownCredential);
    }
    check.violations.extend(validity(
        &check.credential,
        step.span.start_unix_nano as i64,
    ));
    if let Some(tool) = step.facts.tool_name.as_deref() {
        let held = &check.credential.scopes;
        let missing = tools
            .required_scopes(tool)
            .iter()
            .any(|scope| !held.iter().any(|have| have == scope));
        if missing {
            check.violations.push(Violation::ScopeViolation);
        }
        check.write_action = tools.is_write(tool);
    }
    if step.kind == StepKind::Root && exceeds_issuance(root, issued) {
        check.violations.push(Violation::ScopeExceedsIssuance);
    }
    check
}

/// The step's effective credential, and whether the workflow declared it.
/// Root, context and issuance spans act under the root's credential: an
/// issuance record names the credential it minted, not the one it used.
fn effective_credential(
    step: &Step,
    root: &Arc<Credential>,
    issued: &[Credential],
) -> (Arc<Credential>, bool) {
    let acts_as_root =
        matches!(step.kind, StepKind::Root | StepKind::Context) || issuance(&step.span).is_some();
    let own = Credential::of(&step.span).filter(|_| !acts_as_root);
    let Some(own) = own else {
        return (Arc::clone(root), true);
    };
    if own.id == root.id {
        return (Arc::new(fill_from(own, root)), true);
    }
    match issued.iter().find(|record| record.id == own.id) {
        Some(record) => (Arc::new(fill_from(own, record)), true),
        None => (Arc::new(own), false),
    }
}

/// `credential` with the fields it leaves empty taken from `base`.
fn fill_from(mut credential: Credential, base: &Credential) -> Credential {
    if credential.issuer.is_empty() {
        credential.issuer = base.issuer.clone();
    }
    if credential.scopes.is_empty() {
        credential.scopes = base.scopes.clone();
    }
    credential.issued_at_unix_nano = credential.issued_at_unix_nano.or(base.issued_at_unix_nano);
    credential.expires_at_unix_nano = credential
        .expires_at_unix_nano
        .or(base.expires_at_unix_nano);
    credential
}

/// The root's credential with the validity times its issuance record gives
/// where the root leaves them out.
fn with_issuance(root: Credential, issued: &[Credential]) -> Credential {
    match issued
        .iter()
        .find(|record| !root.id.is_empty() && record.id == root.id)
    {
        Some(record) => {
            let scopes = root.scopes.clone();
            let mut filled = fill_from(root, record);
            filled.scopes = scopes;
            filled
        }
        None => root,
    }
}

fn validity(credential: &Credential, at_unix_nano: i64) -> Option<Violation> {
    if credential
        .issued_at_unix_nano
        .is_some_and(|issued_at| at_unix_nano < issued_at)
    {
        return Some(Violation::CredentialNotYetValid);
    }
    if credential
        .expires_at_unix_nano
        .is_some_and(|expires_at| at_unix_nano >= expires_at)
    {
        return Some(Violation::CredentialExpired);
    }
    None
}

fn exceeds_issuance(root: &Credential, issued: &[Credential]) -> bool {
    let Some(record) = issued
        .iter()
        .find(|record| !root.id.is_empty() && record.id == root.id)
    else {
        return false;
    };
    root.scopes
        .iter()
        .any(|scope| !record.scopes.contains(scope))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> ToolRules {
        ToolRules::new(vec![
            ToolRule {
                tool: "delete_*".to_owned(),
                scopes: vec!["orders:write".to_owned()],
                write: true,
            },
            ToolRule {
                tool: "*_order".to_owned(),
                scopes: vec!["orders:read".to_owned()],
                write: false,
            },
        ])
        .unwrap()
    }

    #[test]
    fn tool_rules_add_up() {
        let rules = rules();
        assert_eq!(
            rules.required_scopes("delete_order"),
            vec!["orders:write", "orders:read"]
        );
        assert!(rules.is_write("delete_order"));
        assert!(!rules.is_write("lookup_order"));
        assert!(rules.required_scopes("search").is_empty());
    }

    #[test]
    fn invalid_glob_named() {
        let error = ToolRules::new(vec![ToolRule {
            tool: "a[".to_owned(),
            scopes: vec![],
            write: false,
        }])
        .unwrap_err();
        assert!(error.contains("\"a[\""), "{error}");
    }

    #[test]
    fn validity_window_by_start_time() {
        let credential = Credential {
            issued_at_unix_nano: Some(100),
            expires_at_unix_nano: Some(200),
            ..Credential::default()
        };
        let cases = [
            (99, Some(Violation::CredentialNotYetValid)),
            (100, None),
            (199, None),
            (200, Some(Violation::CredentialExpired)),
        ];
        for (at, expected) in cases {
            assert_eq!(validity(&credential, at), expected, "at {at}");
        }
    }

    #[test]
    fn tool_rules_round_trip_through_yaml() {
        let yaml = "- tool: delete_*\n  scopes: [orders:write]\n  write: true\n";
        let parsed: ToolRules = serde_yaml_ng::from_str(yaml).unwrap();
        assert!(parsed.is_write("delete_x"));
        let bad: Result<ToolRules, _> = serde_yaml_ng::from_str("- tool: 'a['\n");
        assert!(bad.unwrap_err().to_string().contains("invalid tool glob"));
    }
}
