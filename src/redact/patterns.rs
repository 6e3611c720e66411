//! The built-in secret patterns.
//!
//! Each pattern has a kind, which becomes `[REDACTED:<kind>]`. A pattern
//! with a `secret` group replaces only that group, so `password=hunter2`
//! becomes `password=[REDACTED:password]` and a reader still sees which
//! setting it was. Patterns run in list order on each value, the specific
//! ones before the generic assignments. The value part of an assignment
//! never starts with `[`, so an earlier replacement is not redacted twice.

/// One built-in pattern: its kind, its regular expression and its triggers.
pub struct BuiltinPattern {
    pub kind: &'static str,
    pub regex: &'static str,
    /// Literals of which every match of `regex` contains at least one. A
    /// value without any trigger of any built-in pattern skips the built-in
    /// regexes, so a match without a trigger would leave its secret in the
    /// value. The tests in `properties.rs` check this for every pattern on
    /// generated matches.
    pub triggers: Triggers,
}

/// The trigger literals of one pattern and how they are compared.
pub enum Triggers {
    /// Compared byte for byte, for patterns without `(?i)`.
    Exact(&'static [&'static str]),
    /// Compared ignoring ASCII case, for patterns under `(?i)`. The prefilter
    /// also lets through every value with a non-ASCII letter that Unicode
    /// case folding maps to an ASCII letter (`ſ` and the Kelvin sign,
    /// U+212A), so a keyword such as `ſecret`, which `(?i)secret` matches,
    /// is not missed.
    IgnoreCase(&'static [&'static str]),
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
        triggers: Triggers::Exact(&["-----BEGIN "]),
    },
    BuiltinPattern {
        kind: "jwt",
        regex: r"\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{16,}",
        triggers: Triggers::Exact(&["eyJ"]),
    },
    BuiltinPattern {
        kind: "aws_access_key_id",
        regex: r"\b(?:AKIA|ASIA|ABIA|ACCA)[A-Z0-9]{16}\b",
        triggers: Triggers::Exact(&["AKIA", "ASIA", "ABIA", "ACCA"]),
    },
    BuiltinPattern {
        kind: "aws_secret_access_key",
        regex: r#"(?i)aws_?secret_?(?:access_?)?key["']?\s*[:=]\s*["']?(?P<secret>[A-Za-z0-9/+]{40})(?:[^A-Za-z0-9/+]|$)"#,
        triggers: Triggers::IgnoreCase(&["awssecret", "aws_secret"]),
    },
    BuiltinPattern {
        kind: "github_token",
        regex: r"\b(?:ghp|gho|ghu|ghs|ghr)_[A-Za-z0-9]{36,}\b",
        triggers: Triggers::Exact(&["ghp_", "gho_", "ghu_", "ghs_", "ghr_"]),
    },
    BuiltinPattern {
        kind: "github_token",
        regex: r"\bgithub_pat_[A-Za-z0-9_]{50,}\b",
        triggers: Triggers::Exact(&["github_pat_"]),
    },
    BuiltinPattern {
        kind: "gitlab_token",
        regex: r"\bgl(?:pat|ptt|dt|rt|cbt|oas|soat|ft)-[A-Za-z0-9_-]{20,}",
        triggers: Triggers::Exact(&[
            "glpat-", "glptt-", "gldt-", "glrt-", "glcbt-", "gloas-", "glsoat-", "glft-",
        ]),
    },
    BuiltinPattern {
        kind: "slack_token",
        regex: r"\bxox[abposr]-[A-Za-z0-9-]{10,}",
        triggers: Triggers::Exact(&["xoxa-", "xoxb-", "xoxp-", "xoxo-", "xoxs-", "xoxr-"]),
    },
    BuiltinPattern {
        kind: "slack_webhook",
        regex: r"https://hooks\.slack\.com/(?:services|workflows|triggers)/[A-Za-z0-9/_-]{20,}",
        triggers: Triggers::Exact(&["https://hooks.slack.com/"]),
    },
    BuiltinPattern {
        kind: "stripe_key",
        regex: r"\b(?:sk|rk)_(?:live|test)_[A-Za-z0-9]{20,}\b",
        triggers: Triggers::Exact(&["sk_live_", "sk_test_", "rk_live_", "rk_test_"]),
    },
    BuiltinPattern {
        kind: "stripe_key",
        regex: r"\bwhsec_[A-Za-z0-9]{24,}\b",
        triggers: Triggers::Exact(&["whsec_"]),
    },
    BuiltinPattern {
        kind: "google_api_key",
        regex: r"\bAIza[0-9A-Za-z_-]{35}",
        triggers: Triggers::Exact(&["AIza"]),
    },
    BuiltinPattern {
        kind: "google_oauth_secret",
        regex: r"\bGOCSPX-[A-Za-z0-9_-]{24,}",
        triggers: Triggers::Exact(&["GOCSPX-"]),
    },
    BuiltinPattern {
        kind: "google_oauth_token",
        regex: r"\bya29\.[0-9A-Za-z_-]{20,}",
        triggers: Triggers::Exact(&["ya29."]),
    },
    BuiltinPattern {
        kind: "anthropic_api_key",
        regex: r"\bsk-ant-[A-Za-z0-9_-]{32,}",
        triggers: Triggers::Exact(&["sk-ant-"]),
    },
    BuiltinPattern {
        kind: "openai_api_key",
        regex: r"\bsk-(?:proj|svcacct|admin)-[A-Za-z0-9_-]{32,}",
        triggers: Triggers::Exact(&["sk-proj-", "sk-svcacct-", "sk-admin-"]),
    },
    BuiltinPattern {
        kind: "openai_api_key",
        regex: r"\bsk-[A-Za-z0-9]{20}T3BlbkFJ[A-Za-z0-9]{20}\b",
        triggers: Triggers::Exact(&["T3BlbkFJ"]),
    },
    BuiltinPattern {
        kind: "bearer_token",
        regex: r"(?i)\bbearer\s+(?P<secret>[A-Za-z0-9\-._~+/]{16,}=*)",
        triggers: Triggers::IgnoreCase(&["bearer"]),
    },
    BuiltinPattern {
        kind: "basic_auth",
        regex: r"(?i)\bbasic\s+(?P<secret>[A-Za-z0-9+/]{16,}={0,2})",
        triggers: Triggers::IgnoreCase(&["basic"]),
    },
    BuiltinPattern {
        kind: "url_password",
        regex: r"\b[a-z][a-z0-9+.-]*://[^\s:/@]+:(?P<secret>[^\s:/@\[][^\s/@]{2,})@",
        triggers: Triggers::Exact(&["://"]),
    },
    BuiltinPattern {
        kind: "password",
        regex: concat!(
            r"(?i)\b[a-z0-9_.-]*(?:password|passwd|passphrase|pwd)",
            key_suffix!(),
            assigned_value!()
        ),
        triggers: Triggers::IgnoreCase(&["password", "passwd", "passphrase", "pwd"]),
    },
    BuiltinPattern {
        kind: "api_key",
        regex: concat!(
            r"(?i)\b[a-z0-9_.-]*(?:api[_.-]?key|apikey|access[_.-]?key)",
            key_suffix!(),
            assigned_value!()
        ),
        triggers: Triggers::IgnoreCase(&[
            "apikey",
            "api_key",
            "api.key",
            "api-key",
            "accesskey",
            "access_key",
            "access.key",
            "access-key",
        ]),
    },
    BuiltinPattern {
        kind: "secret",
        regex: concat!(
            r"(?i)\b[a-z0-9_.-]*(?:secret|private[_.-]?key|(?:access|auth|refresh|session|id)[_.-]?token)",
            key_suffix!(),
            assigned_value!()
        ),
        triggers: Triggers::IgnoreCase(&[
            "secret",
            "privatekey",
            "private_key",
            "private.key",
            "private-key",
            "accesstoken",
            "access_token",
            "access.token",
            "access-token",
            "authtoken",
            "auth_token",
            "auth.token",
            "auth-token",
            "refreshtoken",
            "refresh_token",
            "refresh.token",
            "refresh-token",
            "sessiontoken",
            "session_token",
            "session.token",
            "session-token",
            "idtoken",
            "id_token",
            "id.token",
            "id-token",
        ]),
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
