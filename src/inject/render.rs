//! Content rendering: a message's parts (subject, headers, text, HTML or
//! MJML) compiled once as minijinja templates, then rendered per
//! recipient with its variables, MJML turned into HTML by mrml after the
//! substitution, and a text part derived from the HTML when none is
//! given. Owns the template language's limits (no file or network
//! access: no loader is set; HTML parts auto-escape; a fuel budget bounds
//! every render); never builds MIME or queues anything. CPU-bound: the
//! caller runs it on a blocking thread.

use std::collections::BTreeMap;

use minijinja::{AutoEscape, Environment, UndefinedBehavior, Value};

use super::api::FieldError;
use super::text::html_to_text;

/// Instructions one render may run (a loop over a million items stops
/// with an error instead of holding a thread).
const FUEL: u64 = 2_000_000;

/// The parts of a content, as given (inline or a stored template).
#[derive(Debug, Clone, Default)]
pub struct Parts {
    /// Subject.
    pub subject: Option<String>,
    /// Text part.
    pub text: Option<String>,
    /// HTML part.
    pub html: Option<String>,
    /// MJML, rendered to the HTML part.
    pub mjml: Option<String>,
    /// Extra headers (name, value template).
    pub headers: Vec<(String, String)>,
    /// Default variables.
    pub defaults: BTreeMap<String, serde_json::Value>,
}

/// A content compiled, ready to render for each recipient.
pub struct Compiled {
    env: Environment<'static>,
    parts: Parts,
    /// The MJML was compiled once (see [`super::precompile`]): its HTML
    /// and text are the templates `mjml.html` and `mjml.text`.
    precompiled: bool,
    /// The JSON field each part came from (`subject`, or
    /// `template(welcome@3).mjml`), for errors.
    prefix: String,
}

/// One recipient's rendering.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rendered {
    /// The subject.
    pub subject: Option<String>,
    /// The text part.
    pub text: Option<String>,
    /// The HTML part.
    pub html: Option<String>,
    /// The extra headers.
    pub headers: Vec<(String, String)>,
}

fn field(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_owned()
    } else {
        format!("{prefix}.{name}")
    }
}

/// The error of template `name` (a field), with its line and column.
fn template_error(prefix: &str, name: &str, source: &str, e: &minijinja::Error) -> FieldError {
    let mut fe = FieldError::new(field(prefix, name), e.detail().unwrap_or(&e.to_string()));
    if let Some(d) = e.detail() {
        fe.reason = format!("{}: {d}", e.kind());
    } else {
        fe.reason = e.kind().to_string();
    }
    fe.line = e.line();
    if let Some(r) = e.range() {
        let (line, column) = line_column(source, r.start);
        fe.line = Some(line);
        fe.column = Some(column);
    }
    fe
}

/// The 1-based line and column of byte `at` in `s`.
pub fn line_column(s: &str, at: usize) -> (usize, usize) {
    let at = at.min(s.len());
    let before = &s.as_bytes()[..at];
    let line = before.iter().filter(|b| **b == b'\n').count() + 1;
    let start = before
        .iter()
        .rposition(|b| *b == b'\n')
        .map_or(0, |p| p + 1);
    let column = String::from_utf8_lossy(&before[start..]).chars().count() + 1;
    (line, column)
}

impl Compiled {
    /// About how many bytes a message of it takes (a buffer size).
    pub fn size_hint(&self) -> usize {
        let p = &self.parts;
        let parts = [&p.text, &p.html, &p.mjml]
            .iter()
            .filter_map(|x| x.as_ref())
            .map(String::len)
            .sum::<usize>();
        // MJML's HTML is several times its source; QP adds a little.
        let mjml = p.mjml.as_ref().map_or(0, |m| m.len() * 6);
        (parts + mjml + 2048).min(1 << 20)
    }

    /// The parts it was compiled from.
    pub fn parts(&self) -> &Parts {
        &self.parts
    }

    /// Compiles every part; every error found, with its field, line and
    /// column. `prefix` names where the parts came from.
    pub fn new(parts: Parts, prefix: &str) -> Result<Self, Vec<FieldError>> {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::SemiStrict);
        env.set_fuel(Some(FUEL));
        env.set_auto_escape_callback(|name| match name {
            "html" | "mjml" | "mjml.html" => AutoEscape::Html,
            _ => AutoEscape::None,
        });
        let mut errors = Vec::new();
        let mut add = |name: String, source: &str| {
            if let Err(e) = env.add_template_owned(name.clone(), source.to_owned()) {
                errors.push(template_error(prefix, &name, source, &e));
            }
        };
        for (name, part) in [
            ("subject", &parts.subject),
            ("text", &parts.text),
            ("html", &parts.html),
            ("mjml", &parts.mjml),
        ] {
            if let Some(p) = part {
                add(name.to_owned(), p);
            }
        }
        for (h, v) in &parts.headers {
            add(format!("headers.{h}"), v);
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        let pre = parts
            .mjml
            .as_deref()
            .and_then(super::precompile::precompile);
        let precompiled = pre.is_some_and(|p| {
            env.add_template_owned("mjml.html", p.html).is_ok()
                && env.add_template_owned("mjml.text", p.text).is_ok()
        });
        Ok(Self {
            env,
            parts,
            precompiled,
            prefix: prefix.to_owned(),
        })
    }

    /// The HTML and text of a precompiled MJML for `ctx`; `None` when it
    /// is not precompiled or does not render (the per-recipient render
    /// then reports the error where the MJML has it).
    fn precompiled(&self, ctx: &Value, text: bool) -> Option<(String, Option<String>)> {
        if !self.precompiled {
            return None;
        }
        let html = self.env.get_template("mjml.html").ok()?.render(ctx).ok()?;
        let text = match text {
            true => Some(self.env.get_template("mjml.text").ok()?.render(ctx).ok()?),
            false => None,
        };
        Some((html, text))
    }

    /// Renders for one recipient: `vars` over the content's defaults.
    /// `mjml_memo` keeps the last MJML source and its HTML, so recipients
    /// whose MJML comes out the same share one MJML render.
    pub fn render(
        &self,
        vars: &BTreeMap<String, serde_json::Value>,
        mjml_memo: &mut Option<(String, String)>,
    ) -> Result<Rendered, Vec<FieldError>> {
        let mut ctx = self.parts.defaults.clone();
        ctx.extend(vars.iter().map(|(k, v)| (k.clone(), v.clone())));
        let ctx = Value::from(minijinja::value::Serde(&ctx));
        let mut errors = Vec::new();
        let mut one = |name: &str, source: &Option<String>| -> Option<String> {
            source.as_ref()?;
            let t = self.env.get_template(name).ok()?;
            match t.render(&ctx) {
                Ok(s) => Some(s),
                Err(e) => {
                    let src = source.as_deref().unwrap_or("");
                    errors.push(template_error(&self.prefix, name, src, &e));
                    None
                }
            }
        };
        let subject = one("subject", &self.parts.subject);
        let text = one("text", &self.parts.text);
        let html = one("html", &self.parts.html);
        let pre = self.precompiled(&ctx, self.parts.text.is_none());
        let mjml = match pre {
            Some(_) => None,
            None => one("mjml", &self.parts.mjml),
        };
        let headers: Vec<(String, String)> = (self.parts.headers.iter())
            .filter_map(|(h, v)| {
                let value = one(&format!("headers.{h}"), &Some(v.clone()))?;
                Some((h.clone(), value))
            })
            .collect();
        let (html, text) = match pre {
            Some((h, t)) => (Some(h), text.or(t)),
            None => (html, text),
        };
        let html = match mjml {
            Some(source) => match mjml_memo {
                Some((s, h)) if *s == source => Some(h.clone()),
                _ => match mjml_to_html(&source) {
                    Ok(h) => {
                        *mjml_memo = Some((source, h.clone()));
                        Some(h)
                    }
                    Err((reason, at)) => {
                        let mut fe = FieldError::new(field(&self.prefix, "mjml"), reason);
                        if let Some((l, c)) = at {
                            (fe.line, fe.column) = (Some(l), Some(c));
                        }
                        errors.push(fe);
                        None
                    }
                },
            },
            None => html,
        };
        if !errors.is_empty() {
            return Err(errors);
        }
        let text = text.or_else(|| html.as_deref().map(html_to_text));
        Ok(Rendered {
            subject,
            text,
            html,
            headers,
        })
    }
}

/// Checks that `parts`' MJML renders, with its default variables and
/// any others left empty (a template is stored before the variables of
/// its messages are known).
pub fn check_mjml(parts: &Parts) -> Result<(), Vec<FieldError>> {
    let Some(source) = &parts.mjml else {
        return Ok(());
    };
    let mut env = Environment::new();
    env.set_fuel(Some(FUEL));
    env.set_auto_escape_callback(|_| AutoEscape::Html);
    let expanded = env
        .render_str(
            source,
            Value::from(minijinja::value::Serde(&parts.defaults)),
        )
        .map_err(|e| vec![template_error("", "mjml", source, &e)])?;
    mjml_to_html(&expanded).map(drop).map_err(|(reason, at)| {
        let mut fe = FieldError::new("mjml", reason);
        if let Some((l, c)) = at {
            (fe.line, fe.column) = (Some(l), Some(c));
        }
        vec![fe]
    })
}

/// MJML to HTML; on error, the reason and the line and column it names
/// (in the substituted source), when it names one.
pub fn mjml_to_html(source: &str) -> Result<String, (String, Option<(usize, usize)>)> {
    use mrml::prelude::parser::Error as E;
    let parsed = mrml::parse(source).map_err(|e| {
        let at = match &e {
            E::UnexpectedElement { position, .. }
            | E::UnexpectedToken { position, .. }
            | E::MissingAttribute { position, .. }
            | E::InvalidAttribute { position, .. }
            | E::InvalidFormat { position, .. }
            | E::IncludeLoaderError { position, .. } => Some(line_column(source, position.start)),
            E::ParserError { source: p, .. } => {
                let pos = p.pos();
                Some((pos.row as usize, pos.col as usize))
            }
            _ => None,
        };
        let reason = match &e {
            E::ParserError { source: p, .. } => format!("MJML: {e}: {p}"),
            _ => format!("MJML: {e}"),
        };
        (reason, at)
    })?;
    let opts = mrml::prelude::render::RenderOptions {
        disable_comments: true,
        ..Default::default()
    };
    parsed
        .element
        .render(&opts)
        .map_err(|e| (format!("MJML: {e}"), None))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> BTreeMap<String, serde_json::Value> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), serde_json::Value::from(*v)))
            .collect()
    }

    #[test]
    fn html_parts_escape_and_text_parts_do_not() {
        let c = Compiled::new(
            Parts {
                subject: Some("Hi {{ name }}".into()),
                html: Some("<p>Hi {{ name }}</p>".into()),
                ..Parts::default()
            },
            "",
        )
        .unwrap();
        let r = c
            .render(&vars(&[("name", "<Bob & Co>")]), &mut None)
            .unwrap();
        assert_eq!(r.subject.as_deref(), Some("Hi <Bob & Co>"));
        assert_eq!(r.html.as_deref(), Some("<p>Hi &lt;Bob &amp; Co&gt;</p>"));
        assert_eq!(
            r.text.as_deref(),
            Some("Hi <Bob & Co>"),
            "derived from the HTML"
        );
    }

    #[test]
    fn errors_name_the_field_line_and_column() {
        let e = Compiled::new(
            Parts {
                html: Some("<p>\n  {{ name }</p>".into()),
                ..Parts::default()
            },
            "template(welcome@2)",
        )
        .err()
        .unwrap();
        assert_eq!(e[0].field, "template(welcome@2).html");
        assert_eq!(e[0].line, Some(2), "{e:?}");
        let c = Compiled::new(
            Parts {
                subject: Some("{{ missing.field }}".into()),
                ..Parts::default()
            },
            "",
        )
        .unwrap();
        let e = c.render(&BTreeMap::new(), &mut None).unwrap_err();
        assert_eq!(e[0].field, "subject");
        assert!(e[0].reason.contains("undefined"), "{e:?}");
    }

    #[test]
    fn mjml_renders_after_substitution_and_its_errors_have_a_line() {
        let c = Compiled::new(
            Parts {
                mjml: Some("<mjml><mj-body><mj-section><mj-column><mj-text>Hello {{ name }}</mj-text></mj-column></mj-section></mj-body></mjml>".into()),
                ..Parts::default()
            },
            "",
        )
        .unwrap();
        let mut memo = None;
        let r = c
            .render(&vars(&[("name", "Ann & <Bo>")]), &mut memo)
            .unwrap();
        assert!(
            r.html
                .as_deref()
                .unwrap()
                .contains("Hello Ann &amp; &lt;Bo&gt;")
        );
        assert!(r.text.as_deref().unwrap().contains("Hello Ann & <Bo>"));
        // Compiled once, it renders what a per-recipient MJML render does.
        assert!(c.precompiled && memo.is_none());
        let mut each = Compiled::new(c.parts.clone(), "").unwrap();
        each.precompiled = false;
        let r2 = each
            .render(&vars(&[("name", "Ann & <Bo>")]), &mut memo)
            .unwrap();
        assert_eq!(r, r2);
        assert!(memo.is_some());
        let bad = Compiled::new(
            Parts {
                mjml: Some(
                    "<mjml>\n<mj-body>\n<mj-section foo=></mj-section></mj-body></mjml>".into(),
                ),
                ..Parts::default()
            },
            "",
        )
        .unwrap();
        let e = bad.render(&BTreeMap::new(), &mut None).unwrap_err();
        assert_eq!(e[0].field, "mjml");
        assert_eq!(e[0].line, Some(3), "{e:?}");
    }

    #[test]
    fn a_runaway_template_runs_out_of_fuel() {
        let c = Compiled::new(
            Parts {
                text: Some("{% for i in range(10000) %}{% for j in range(10000) %}x{% endfor %}{% endfor %}".into()),
                ..Parts::default()
            },
            "",
        )
        .unwrap();
        let e = c.render(&BTreeMap::new(), &mut None).unwrap_err();
        assert!(e[0].reason.contains("fuel"), "{e:?}");
    }
}
