//! The built-in secret patterns.
//!
//! Each pattern has a kind, which becomes `[REDACTED:<kind>]`. A pattern
//! with a `secret` group replaces only that group, so `password=hunter2`
//! becomes `password=[REDACTED:password]` and a reader still sees which
//! setting it was. Patterns run in list order on each value, the specific
//! ones before the generic assignments. The value part of an assignment
//! never starts with `[`, so an earlier replacement is not redacted twice.

/// One built-in pattern: its kind and its regular expression.
pub struct BuiltinPattern {
    pub kind: &'static str,
    pub regex: &'static str,
}

/// The characters a generic assignment's value may contain: anything up to
/// whitespace, a quote or a separator of query strings and lists.
macro_rules! assigned_value {
    () => {
        r#"["']?\s*[:=]\s*["']?(?P<secret>[^\s"'&,;\[<][^\s"'&,;<]{3,})"#
    };
}

/// The suffix that may follow the keyword in an assignment's key: a plural and a
/// `_key`-style suffix, so `client_secret` and `DB_PASSWORD` match but
/// `session_token_ttl` or `password_hint` do not.
macro_rules! key_suffix {
    () => {
        r"s?(?:[_.-]?(?:key|value|string|hash|b64))?"
    };
}

/// The built-in patterns, in the order they run.
pub const BUILTIN: &[BuiltinPattern] = &[
    BuiltinPattern {
        kind: "private_key",
        regex: r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----(?s:.*?)(?:-----END (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----|\z)",
    },
    BuiltinPattern {
        kind: "jwt",
        regex: r"\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{16,}",
    },
    BuiltinPattern {
        kind: "aws_access_key_id",
        regex: r"\b(?:AKIA|ASIA|ABIA|ACCA)[A-Z0-9]{16}\b",
    },
    BuiltinPattern {
        kind: "aws_secret_access_key",
        regex: r#"(?i)aws_?secret_?(?:access_?)?key["']?\s*[:=]\s*["']?(?P<secret>[A-Za-z0-9/+]{40})(?:[^A-Za-z0-9/+]|$)"#,
    },
    BuiltinPattern {
        kind: "github_token",
        regex: r"\b(?:ghp|gho|ghu|ghs|ghr)_[A-Za-z0-9]{36,}\b",
    },
    BuiltinPattern {
        kind: "github_token",
        regex: r"\bgithub_pat_[A-Za-z0-9_]{50,}\b",
    },
    BuiltinPattern {
        kind: "gitlab_token",
        regex: r"\bgl(?:pat|ptt|dt|rt|cbt|oas|soat|ft)-[A-Za-z0-9_-]{20,}",
    },
    BuiltinPattern {
        kind: "slack_token",
        regex: r"\bxox[abposr]-[A-Za-z0-9-]{10,}",
    },
    BuiltinPattern {
        kind: "slack_webhook",
        regex: r"https://hooks\.slack\.com/(?:services|workflows|triggers)/[A-Za-z0-9/_-]{20,}",
    },
    BuiltinPattern {
        kind: "stripe_key",
        regex: r"\b(?:sk|rk)_(?:live|test)_[A-Za-z0-9]{20,}\b",
    },
    BuiltinPattern {
        kind: "stripe_key",
        regex: r"\bwhsec_[A-Za-z0-9]{24,}\b",
    },
    BuiltinPattern {
        kind: "google_api_key",
        regex: r"\bAIza[0-9A-Za-z_-]{35}",
    },
    BuiltinPattern {
        kind: "google_oauth_secret",
        regex: r"\bGOCSPX-[A-Za-z0-9_-]{24,}",
    },
    BuiltinPattern {
        kind: "google_oauth_token",
        regex: r"\bya29\.[0-9A-Za-z_-]{20,}",
    },
    BuiltinPattern {
        kind: "anthropic_api_key",
        regex: r"\bsk-ant-[A-Za-z0-9_-]{32,}",
    },
    BuiltinPattern {
        kind: "openai_api_key",
        regex: r"\bsk-(?:proj|svcacct|admin)-[A-Za-z0-9_-]{32,}",
    },
    BuiltinPattern {
        kind: "openai_api_key",
        regex: r"\bsk-[A-Za-z0-9]{20}T3BlbkFJ[A-Za-z0-9]{20}\b",
    },
    BuiltinPattern {
        kind: "bearer_token",
        regex: r"(?i)\bbearer\s+(?P<secret>[A-Za-z0-9\-._~+/]{16,}=*)",
    },
    BuiltinPattern {
        kind: "basic_auth",
        regex: r"(?i)\bbasic\s+(?P<secret>[A-Za-z0-9+/]{16,}={0,2})",
    },
    BuiltinPattern {
        kind: "url_password",
        regex: r"\b[a-z][a-z0-9+.-]*://[^\s:/@]+:(?P<secret>[^\s:/@\[][^\s/@]{2,})@",
    },
    BuiltinPattern {
        kind: "password",
        regex: concat!(
            r"(?i)\b[a-z0-9_.-]*(?:password|passwd|passphrase|pwd)",
            key_suffix!(),
            assigned_value!()
        ),
    },
    BuiltinPattern {
        kind: "api_key",
        regex: concat!(
            r"(?i)\b[a-z0-9_.-]*(?:api[_.-]?key|apikey|access[_.-]?key)",
            key_suffix!(),
            assigned_value!()
        ),
    },
    BuiltinPattern {
        kind: "secret",
        regex: concat!(
            r"(?i)\b[a-z0-9_.-]*(?:secret|private[_.-]?key|(?:access|auth|refresh|session|id)[_.-]?token)",
            key_suffix!(),
            assigned_value!()
        ),
    },
];

/// Attribute keys never scanned: credential attributes are identifiers
/// and descriptions of a credential, never its secret.
pub const SKIPPED_KEYS: &[&str] = &[
    "agent_ledger.credential.id",
    "agent_ledger.credential.issuer",
    "agent_ledger.credential.scopes",
    "agent_ledger.credential.issued_at",
    "agent_ledger.credential.expires_at",
    "agent_ledger.credential.event",
];
