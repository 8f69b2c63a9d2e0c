//! The injection API's types, shared by the admin handlers (which serve
//! them), the injector (which acts on them) and the CLI (which sends and
//! prints them). A leaf: types and their documentation only.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// `POST /v1/messages`: one content, many recipients. Give the content
/// inline (`text`, `html` or `mjml`) or name a stored `template`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SendRequest {
    /// The author: `"shop@shop.example"` or `"Shop <shop@shop.example>"`;
    /// also the envelope sender (bounces come back to it).
    pub from: String,
    /// The Reply-To address, if any.
    #[serde(default)]
    pub reply_to: Option<String>,
    /// The subject (a template: variables are substituted).
    #[serde(default)]
    pub subject: Option<String>,
    /// Extra headers (values are templates). Tern's own (From, To,
    /// Subject, Date, Message-ID, MIME) cannot be set here.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// The plain-text part (a template).
    #[serde(default)]
    pub text: Option<String>,
    /// The HTML part (a template, HTML-escaped substitution).
    #[serde(default)]
    pub html: Option<String>,
    /// MJML, rendered to the HTML part after substitution; the text part
    /// is derived from it unless `text` is given.
    #[serde(default)]
    pub mjml: Option<String>,
    /// A stored template's name, instead of inline content.
    #[serde(default)]
    pub template: Option<String>,
    /// Its version (default: the latest).
    #[serde(default)]
    pub template_version: Option<u32>,
    /// Files attached to every recipient's message.
    #[serde(default)]
    pub attachments: Vec<Attachment>,
    /// Who gets it (at most `api.max_recipients`).
    pub recipients: Vec<Recipient>,
    /// Variables for every recipient (a recipient's own win).
    #[serde(default)]
    pub variables: BTreeMap<String, Value>,
    /// The tenant the mail belongs to.
    #[serde(default)]
    pub tenant: Option<String>,
    /// The pool to send from (default: the tenant's, else the default).
    #[serde(default)]
    pub pool: Option<String>,
    /// `high`, `normal`, `low` or `bulk` (default: the tenant's, else
    /// normal).
    #[serde(default)]
    pub priority: Option<String>,
    /// The caller's own id, returned in every event of these messages.
    #[serde(default)]
    pub custom_id: Option<String>,
    /// The caller's own data, returned in every event (a JSON object).
    #[serde(default)]
    #[schema(value_type = Object)]
    pub metadata: Option<Value>,
}

/// A file attached to the message.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Attachment {
    /// Its MIME type (`application/pdf`).
    pub content_type: String,
    /// Its file name (UTF-8; encoded per RFC 2231).
    pub filename: String,
    /// Its bytes, base64.
    pub content: String,
}

/// One recipient: an address, or an address with a name and variables.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum Recipient {
    /// `"a@example.com"`.
    Address(String),
    /// `{"email": ..., "name": ..., "variables": {...}}`.
    Full(FullRecipient),
}

/// A recipient with a name and variables of its own.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FullRecipient {
    /// The address.
    pub email: String,
    /// The display name in To.
    #[serde(default)]
    pub name: Option<String>,
    /// Its variables (over the request's).
    #[serde(default)]
    pub variables: BTreeMap<String, Value>,
}

impl Recipient {
    /// The address.
    pub fn email(&self) -> &str {
        match self {
            Recipient::Address(a) => a,
            Recipient::Full(f) => &f.email,
        }
    }
}

/// The answer to `POST /v1/messages` (`202`): one row per recipient, in
/// the request's order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SendResponse {
    /// Messages queued (durable).
    pub queued: usize,
    /// Recipients refused (see their rows).
    pub rejected: usize,
    /// Per recipient.
    pub results: Vec<RecipientResult>,
}

/// What became of one recipient.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RecipientResult {
    /// The address.
    pub email: String,
    /// Its message's queue id, when queued.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_id: Option<String>,
    /// Its Message-ID, when queued.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_id: Option<String>,
    /// Why it was not queued.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<FieldError>,
}

/// What is wrong, and where: the JSON field (`recipients[2].email`), the
/// reason, and for a template error its line and column in that field.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FieldError {
    /// The field.
    pub field: String,
    /// The reason.
    pub reason: String,
    /// The line (1-based) in the field's text, for a template error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
    /// The column (1-based), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub column: Option<usize>,
}

impl FieldError {
    /// An error of `field`.
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            reason: reason.into(),
            line: None,
            column: None,
        }
    }
}

/// The body of a `400`/`422`: every error found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct InvalidRequest {
    /// A summary.
    pub error: String,
    /// Each field in error.
    pub errors: Vec<FieldError>,
}

/// `PUT /v1/templates/{name}`: a new version of a template.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TemplateContent {
    /// The subject (a template).
    #[serde(default)]
    pub subject: Option<String>,
    /// MJML source.
    #[serde(default)]
    pub mjml: Option<String>,
    /// HTML (instead of MJML).
    #[serde(default)]
    pub html: Option<String>,
    /// The text part (default: derived from the HTML).
    #[serde(default)]
    pub text: Option<String>,
    /// Default variables (a message's own win).
    #[serde(default)]
    #[schema(value_type = Object)]
    pub variables: BTreeMap<String, Value>,
}

/// A stored version of a template.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TemplateVersion {
    /// Its version, from 1.
    pub version: u32,
    /// When it was stored (RFC 3339).
    pub created: String,
    /// Its content.
    #[serde(flatten)]
    pub content: TemplateContent,
}

/// `GET /v1/templates/{name}`: its versions, newest last.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TemplateInfo {
    /// Its name.
    pub name: String,
    /// Every version kept.
    pub versions: Vec<TemplateVersion>,
}

/// `POST /v1/templates/{name}/preview`: variables to render with.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PreviewRequest {
    /// The version (default: the latest).
    #[serde(default)]
    pub version: Option<u32>,
    /// The variables.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub variables: BTreeMap<String, Value>,
}

/// What a template renders to, or its errors.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Preview {
    /// The subject.
    pub subject: Option<String>,
    /// The HTML part.
    pub html: Option<String>,
    /// The text part.
    pub text: Option<String>,
    /// Errors (with line and column), when it does not render.
    pub errors: Vec<FieldError>,
}
