//! Stored templates: named, versioned, kept durably in the spool (the
//! queue's state records, one key per template holding its versions), so
//! they survive a restart and travel with the spool; and their compiled
//! form, cached per version (a version never changes once stored). Owns
//! the store; rendering is [`super::render`]'s.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use queue::Queue;

use super::api::{FieldError, TemplateContent, TemplateInfo, TemplateVersion};
use super::render::{Compiled, Parts};

/// Where templates are kept in the spool's state.
const PREFIX: &str = "templates/";

/// Versions kept per template (the oldest go first).
pub const MAX_VERSIONS: usize = 50;

/// Why a template operation failed.
#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    /// No such template or version.
    #[error("{0}")]
    NotFound(String),
    /// The name or the content is not acceptable.
    #[error("invalid template")]
    Invalid(Vec<FieldError>),
    /// The spool could not keep it.
    #[error("the spool could not keep the template: {0}")]
    Spool(#[from] queue::QueueError),
}

/// The template store.
pub struct Templates {
    queue: Arc<Queue>,
    /// Compiled versions: (name, version).
    compiled: Mutex<HashMap<(String, u32), Arc<Compiled>>>,
    /// One writer at a time (versions are numbered in order).
    write: tokio::sync::Mutex<()>,
}

/// Checks a template name: 1 to 100 letters, digits, `.`, `_`, `-`.
pub fn check_name(name: &str) -> Result<(), FieldError> {
    let ok = !name.is_empty()
        && name.len() <= 100
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    match ok {
        true => Ok(()),
        false => Err(FieldError::new(
            "name",
            "a template name is 1 to 100 letters, digits, '.', '_' or '-'",
        )),
    }
}

impl Templates {
    /// The store kept in `queue`'s spool.
    pub fn new(queue: Arc<Queue>) -> Self {
        Self {
            queue,
            compiled: Mutex::new(HashMap::new()),
            write: tokio::sync::Mutex::new(()),
        }
    }

    /// Every template's name.
    pub fn names(&self) -> Vec<String> {
        (self.queue.state_keys(PREFIX).into_iter())
            .map(|k| k[PREFIX.len()..].to_owned())
            .collect()
    }

    /// A template and its versions.
    pub fn get(&self, name: &str) -> Option<TemplateInfo> {
        let v = self.queue.state(&format!("{PREFIX}{name}"))?;
        serde_json::from_slice(&v).ok()
    }

    /// Stores `content` as the next version of `name` once it compiles;
    /// returns the version, durable.
    pub async fn put(
        &self,
        name: &str,
        content: TemplateContent,
        now: std::time::SystemTime,
    ) -> Result<u32, TemplateError> {
        check_name(name).map_err(|e| TemplateError::Invalid(vec![e]))?;
        if content.mjml.is_some() && content.html.is_some() {
            return Err(TemplateError::Invalid(vec![FieldError::new(
                "html",
                "give mjml or html, not both",
            )]));
        }
        if content.mjml.is_none() && content.html.is_none() && content.text.is_none() {
            return Err(TemplateError::Invalid(vec![FieldError::new(
                "mjml",
                "a template needs mjml, html or text",
            )]));
        }
        // It must compile (template syntax), and its MJML must render.
        Compiled::new(parts(&content), "").map_err(TemplateError::Invalid)?;
        super::render::check_mjml(&parts(&content)).map_err(TemplateError::Invalid)?;
        let _one = self.write.lock().await;
        let mut info = self.get(name).unwrap_or_else(|| TemplateInfo {
            name: name.to_owned(),
            versions: Vec::new(),
        });
        let version = info.versions.last().map_or(1, |v| v.version + 1);
        info.versions.push(TemplateVersion {
            version,
            created: crate::clock::rfc3339(now),
            content,
        });
        if info.versions.len() > MAX_VERSIONS {
            let extra = info.versions.len() - MAX_VERSIONS;
            info.versions.drain(..extra);
        }
        let bytes = serde_json::to_vec(&info).unwrap_or_default();
        (self.queue)
            .put_state(&format!("{PREFIX}{name}"), Bytes::from(bytes))
            .await?;
        Ok(version)
    }

    /// The compiled form of `name` at `version` (default: the latest),
    /// and the version it is.
    pub fn compiled(
        &self,
        name: &str,
        version: Option<u32>,
    ) -> Result<(Arc<Compiled>, u32), TemplateError> {
        let info = self
            .get(name)
            .ok_or_else(|| TemplateError::NotFound(format!("no template is named {name:?}")))?;
        let v = match version {
            Some(n) => info.versions.iter().find(|v| v.version == n),
            None => info.versions.last(),
        }
        .ok_or_else(|| {
            TemplateError::NotFound(format!(
                "template {name:?} has no version {}",
                version.unwrap_or(0)
            ))
        })?;
        let key = (name.to_owned(), v.version);
        if let Some(c) = self.lock().get(&key) {
            return Ok((c.clone(), v.version));
        }
        let prefix = format!("template({name}@{})", v.version);
        let c =
            Arc::new(Compiled::new(parts(&v.content), &prefix).map_err(TemplateError::Invalid)?);
        let mut cache = self.lock();
        if cache.len() >= 1000 {
            cache.clear();
        }
        cache.insert(key, c.clone());
        Ok((c, v.version))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, u32), Arc<Compiled>>> {
        self.compiled.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A template version's parts.
fn parts(c: &TemplateContent) -> Parts {
    Parts {
        subject: c.subject.clone(),
        text: c.text.clone(),
        html: c.html.clone(),
        mjml: c.mjml.clone(),
        headers: Vec::new(),
        defaults: c.variables.clone(),
    }
}
