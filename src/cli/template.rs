//! `tern template push|show|preview`: stored templates of the injection
//! API, through the running daemon (they are kept in its spool).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Subcommand;

use super::Ctx;
use crate::admin::client::{get, send};
use crate::admin::types::TemplateStored;
use crate::config;
use crate::inject::api::{Preview, PreviewRequest, TemplateContent, TemplateInfo};

/// `tern template ...`.
#[derive(Debug, Subcommand)]
pub enum TemplateCommand {
    /// Store a file as the next version of a template: `.mjml` is MJML,
    /// `.html`/`.htm` HTML, anything else the text part.
    Push {
        /// The template's name.
        name: String,
        /// The content file.
        file: PathBuf,
        /// Its subject (a template too).
        #[arg(long)]
        subject: Option<String>,
        /// A text part from this file (default: derived from the HTML).
        #[arg(long)]
        text: Option<PathBuf>,
        /// Default variables, as a JSON object.
        #[arg(long)]
        vars: Option<String>,
        /// The configuration file (for the admin address and token).
        #[arg(long, short, default_value_os_t = config::default_path())]
        config: PathBuf,
    },
    /// List the templates, or one template's versions (with --version,
    /// that version's content).
    Show {
        /// The template (default: list them all).
        name: Option<String>,
        /// One version's content.
        #[arg(long)]
        version: Option<u32>,
        /// The configuration file (for the admin address and token).
        #[arg(long, short, default_value_os_t = config::default_path())]
        config: PathBuf,
    },
    /// Render a template with variables, without sending: the subject
    /// and text part (and the HTML with --html), or its errors with line
    /// and column (exit 1).
    Preview {
        /// The template.
        name: String,
        /// The version (default: the latest).
        #[arg(long)]
        version: Option<u32>,
        /// Variables, as a JSON object.
        #[arg(long)]
        vars: Option<String>,
        /// Print the HTML too.
        #[arg(long)]
        html: bool,
        /// The configuration file (for the admin address and token).
        #[arg(long, short, default_value_os_t = config::default_path())]
        config: PathBuf,
    },
}

/// Runs a `tern template` command.
pub fn main(command: TemplateCommand, ctx: &Ctx) -> ExitCode {
    let result = match command {
        TemplateCommand::Push {
            name,
            file,
            subject,
            text,
            vars,
            config,
        } => push(
            &config,
            &name,
            &file,
            subject,
            text.as_deref(),
            vars.as_deref(),
            ctx,
        ),
        TemplateCommand::Show {
            name,
            version,
            config,
        } => show(&config, name.as_deref(), version, ctx),
        TemplateCommand::Preview {
            name,
            version,
            vars,
            html,
            config,
        } => preview(&config, &name, version, vars.as_deref(), html, ctx),
    };
    result.unwrap_or_else(|e| {
        eprintln!("tern: {e}");
        ExitCode::FAILURE
    })
}

fn variables(
    vars: Option<&str>,
) -> Result<std::collections::BTreeMap<String, serde_json::Value>, String> {
    match vars {
        None => Ok(Default::default()),
        Some(v) => serde_json::from_str(v).map_err(|e| format!("--vars: not a JSON object: {e}")),
    }
}

fn read(file: &Path) -> Result<String, String> {
    std::fs::read_to_string(file).map_err(|e| format!("{}: {e}", file.display()))
}

fn push(
    config: &Path,
    name: &str,
    file: &Path,
    subject: Option<String>,
    text: Option<&Path>,
    vars: Option<&str>,
    ctx: &Ctx,
) -> Result<ExitCode, String> {
    let a = ctx.endpoint(config)?;
    let body = read(file)?;
    let mut content = TemplateContent {
        subject,
        variables: variables(vars)?,
        ..TemplateContent::default()
    };
    match file
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        Some("mjml") => content.mjml = Some(body),
        Some("html" | "htm") => content.html = Some(body),
        _ => content.text = Some(body),
    }
    if let Some(t) = text {
        content.text = Some(read(t)?);
    }
    let path = format!("/v1/templates/{}", super::control::encode(name));
    let stored: TemplateStored = send(&a, "PUT", &path, &content).map_err(|e| e.to_string())?;
    Ok(super::emit(ctx.json, &stored, |s| {
        format!("{}: version {}\n", s.name, s.version)
    }))
}

fn show(
    config: &Path,
    name: Option<&str>,
    version: Option<u32>,
    ctx: &Ctx,
) -> Result<ExitCode, String> {
    let a = ctx.endpoint(config)?;
    let Some(name) = name else {
        let names: Vec<String> = get(&a, "/v1/templates").map_err(|e| e.to_string())?;
        return Ok(super::emit(ctx.json, &names, |n| {
            n.iter().map(|x| format!("{x}\n")).collect()
        }));
    };
    let path = format!("/v1/templates/{}", super::control::encode(name));
    let info: TemplateInfo = get(&a, &path).map_err(|e| e.to_string())?;
    if let Some(v) = version {
        let one = info
            .versions
            .iter()
            .find(|x| x.version == v)
            .ok_or_else(|| format!("{name} has no version {v}"))?;
        return Ok(super::emit(ctx.json, one, |x| {
            let c = &x.content;
            let mut out = format!("{name} version {} ({})\n", x.version, x.created);
            for (label, part) in [
                ("subject", &c.subject),
                ("mjml", &c.mjml),
                ("html", &c.html),
                ("text", &c.text),
            ] {
                if let Some(p) = part {
                    out.push_str(&format!("--- {label}\n{p}\n"));
                }
            }
            out
        }));
    }
    Ok(super::emit(ctx.json, &info, |i| {
        let mut out = format!("{:<8} {:<26} {}\n", "version", "created", "content");
        for v in &i.versions {
            let kind = if v.content.mjml.is_some() {
                "mjml"
            } else if v.content.html.is_some() {
                "html"
            } else {
                "text"
            };
            out.push_str(&format!("{:<8} {:<26} {kind}\n", v.version, v.created));
        }
        out
    }))
}

fn preview(
    config: &Path,
    name: &str,
    version: Option<u32>,
    vars: Option<&str>,
    html: bool,
    ctx: &Ctx,
) -> Result<ExitCode, String> {
    let a = ctx.endpoint(config)?;
    let req = PreviewRequest {
        version,
        variables: variables(vars)?,
    };
    let path = format!("/v1/templates/{}/preview", super::control::encode(name));
    let p: Preview = send(&a, "POST", &path, &req).map_err(|e| e.to_string())?;
    let failed = !p.errors.is_empty();
    let code = super::emit(ctx.json, &p, |p| {
        let mut out = String::new();
        for e in &p.errors {
            let at = e
                .line
                .map_or(String::new(), |l| format!(":{l}:{}", e.column.unwrap_or(1)));
            out.push_str(&format!("error: {}{at}: {}\n", e.field, e.reason));
        }
        if let Some(s) = &p.subject {
            out.push_str(&format!("Subject: {s}\n"));
        }
        if let Some(t) = &p.text {
            out.push_str(&format!("\n{t}\n"));
        }
        if html && let Some(h) = &p.html {
            out.push_str(&format!("\n--- html\n{h}\n"));
        }
        out
    });
    Ok(if failed { ExitCode::FAILURE } else { code })
}
