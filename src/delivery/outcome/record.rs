//! Each outcome as a delivery-log line and a metric.

use super::super::Delivery;
use super::{Message, Outcome};
use crate::log::{Kind, Record};

impl Delivery {
    /// Logs an outcome of `msg` (the `attempts`-th try) and counts it.
    pub(super) fn log_outcome(&self, msg: &Message, kind: Kind, o: &Outcome, attempts: u16) {
        let now = self.clock.system_time();
        let info = &msg.info;
        let mut r = Record::new(kind, now, info.id.to_string(), &*info.envelope.sender);
        r.message_id = msg.meta.message_id.as_deref().map(Into::into);
        r.recipient = (info.envelope.recipients)
            .get(o.index as usize)
            .map(|rc| (&*rc.address).into());
        r.pool = Some((&*msg.pool).into());
        r.site = o.site.as_deref().map(Into::into);
        if let Some(s) = &o.source {
            r.source = Some((&*s.name).into());
            r.source_ip = s.address.map(|a| a.to_string().into());
            r.proxy = s.proxy.as_ref().map(|p| p.public().into());
        }
        r.remote_host = o.host.as_ref().map(|(h, _)| h.as_str().into());
        r.remote_ip = o.host.as_ref().map(|(_, a)| a.ip().to_string().into());
        r.tls = o.tls;
        r.tls_policy = o.tls_policy;
        r.reply = Some(o.reply.to_string().into());
        r.code = Some(o.reply.code);
        let [a, b, c] = o.reply.status();
        r.enhanced_code = Some(format!("{a}.{b}.{c}").into());
        if kind != Kind::Delivery {
            let class =
                (self.settings.classifier).classify(o.reply.code, o.reply.esc, &o.reply.text);
            r.bounce_class = Some(class.name);
            r.bounce_kind = Some(class.kind());
        }
        r.tenant = msg.meta.tenant.as_deref().map(Into::into);
        r.custom_id = msg.meta.custom_id.as_deref().map(Into::into);
        r.metadata = msg
            .meta
            .metadata
            .as_deref()
            .and_then(|m| serde_json::from_str(m).ok());
        r.attempts = Some(attempts);
        let queued = self.clock.now().saturating_since(info.arrival).as_millis() as u64;
        r.queue_time_ms = Some(queued);
        self.log.write(&r);
        if let Some(class) = r.bounce_class {
            (self.settings.metrics).bounce(class, kind_name(kind));
        }
        self.count(msg, kind, o, queued);
        if kind != Kind::Delivery {
            tracing::info!(queue_id = %info.id, rcpt = %r.recipient.as_deref().unwrap_or(""), reply = %o.reply, ?kind, "delivery outcome");
        }
    }

    /// Counts an outcome in the metrics.
    fn count(&self, msg: &Message, kind: Kind, o: &Outcome, queue_ms: u64) {
        use crate::metrics::{Labels, Outcome as M};
        let m = &self.settings.metrics;
        let outcome = match kind {
            Kind::Delivery => M::Delivered,
            Kind::TransientFailure => M::Deferred,
            Kind::Bounce => M::Bounced,
            Kind::Expiration => M::Expired,
            _ => return,
        };
        m.outcome(
            outcome,
            &Labels {
                provider: o.provider.as_deref().unwrap_or("other"),
                source: o.source.as_ref().map_or("", |s| &s.name),
                pool: &msg.pool,
                tenant: msg.meta.tenant.as_deref().unwrap_or(""),
            },
        );
        if kind == Kind::Delivery {
            m.queue_time(queue_ms as f64 / 1000.0);
        }
    }
}

/// The outcome label of a failure or deferral.
fn kind_name(kind: Kind) -> &'static str {
    match kind {
        Kind::TransientFailure => "deferred",
        Kind::Expiration => "expired",
        _ => "bounced",
    }
}
