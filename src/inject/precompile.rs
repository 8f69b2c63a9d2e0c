//! MJML compiled once per content instead of once per recipient, when
//! that gives the same mail: the MJML's `{{ expression }}`s are swapped
//! for inert tokens, mrml renders the result once, and the tokens in its
//! HTML (and in the text derived from it) become the expressions again,
//! as HTML and text templates rendered per recipient. With auto-escaping,
//! a value is text either way, so the HTML matches a per-recipient MJML
//! render. Not done (each recipient's MJML is rendered, as written) when
//! the MJML has block tags (`{% %}`, which may shape the MJML), comments,
//! or an expression mrml does not carry through to its HTML unchanged
//! (in an attribute it reads as a number or a colour, say).

use super::render::mjml_to_html;
use super::text::html_to_text;

/// The per-recipient HTML and text templates of an MJML content.
pub struct Precompiled {
    /// The HTML, with the expressions back in.
    pub html: String,
    /// Its text part, with the expressions back in.
    pub text: String,
}

fn token(n: usize) -> String {
    format!("T3rnV{n:05}Q")
}

/// The two templates, or `None` when the MJML must be rendered per
/// recipient.
pub fn precompile(mjml: &str) -> Option<Precompiled> {
    if mjml.contains("{%") || mjml.contains("{#") || mjml.contains("T3rnV") {
        return None;
    }
    let mut swapped = String::with_capacity(mjml.len());
    let mut exprs = Vec::new();
    let mut rest = mjml;
    while let Some(open) = rest.find("{{") {
        let close = rest[open..].find("}}")? + open + 2;
        swapped.push_str(&rest[..open]);
        swapped.push_str(&token(exprs.len()));
        exprs.push(&rest[open..close]);
        rest = &rest[close..];
    }
    swapped.push_str(rest);
    let html = mjml_to_html(&swapped).ok()?;
    if (0..exprs.len()).any(|n| !html.contains(&token(n))) {
        return None;
    }
    let text = html_to_text(&html);
    let back = |s: &str| {
        let mut out = s.to_owned();
        for (n, e) in exprs.iter().enumerate().rev() {
            out = out.replace(&token(n), e);
        }
        out
    };
    Some(Precompiled {
        html: back(&html),
        text: back(&text),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expressions_come_back_in_the_html_and_the_text() {
        let p = precompile("<mjml><mj-body><mj-section><mj-column><mj-text>Hi {{ name }}</mj-text><mj-button href=\"https://s.example/{{ id }}\">Go</mj-button></mj-column></mj-section></mj-body></mjml>").unwrap();
        assert!(p.html.contains("Hi {{ name }}") && p.html.contains("https://s.example/{{ id }}"));
        assert!(p.text.contains("Hi {{ name }}"), "{}", p.text);
    }

    #[test]
    fn block_tags_and_swallowed_expressions_render_per_recipient() {
        assert!(precompile("<mjml><mj-body>{% for i in items %}<mj-section></mj-section>{% endfor %}</mj-body></mjml>").is_none());
        assert!(precompile("<mjml><mj-body><mj-section><mj-column width=\"{{ w }}\"><mj-text>x</mj-text></mj-column></mj-section></mj-body></mjml>").is_none());
    }
}
