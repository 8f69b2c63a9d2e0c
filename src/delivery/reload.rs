//! A reload and an operator's "retry now", as delivery sees them.
//!
//! A reload puts the new shaping, sources, pools, routes and tenant
//! weights in force. Every limit whose setting did not change keeps its
//! state: shared scopes (by the shaper), and each path's own rates and
//! slow-down (a path whose plan is unchanged is kept as it is; a changed
//! one is replaced by a path that takes over its limiters where their
//! rates are the same). The ready jobs go back to their destinations,
//! which pick their sources again (so a source taken out of a pool gets
//! no more of its mail); replaced paths finish the transactions under way
//! and retire when idle (no connection is dropped).

use std::sync::Arc;

use super::dispatch::Path;
use super::{Delivery, Weights};
use crate::config::Config;

impl Delivery {
    /// Puts a new, validated config in force (see the module docs).
    pub fn reload(self: &Arc<Self>, config: &Config) {
        self.settings.shaper.replace(config);
        self.egress.set(self.egress.get().reloaded(config));
        self.router.set(self.router.get().reloaded(config));
        self.weights.set(Weights::new(config));
        self.scheduler.routes.clear();
        let egress = self.egress.get();
        let mut ready = Vec::new();
        let mut retired = Vec::new();
        {
            let mut paths = self.paths.lock().unwrap_or_else(|p| p.into_inner());
            let old: Vec<_> = paths.drain().collect();
            for (key, p) in old {
                ready.extend(p.take_ready());
                let Some(source) = egress.source(&p.source.name) else {
                    retired.push(p);
                    continue;
                };
                let plan = self.settings.shaper.plan(&source.name, &p.site, p.domain());
                let same = Arc::ptr_eq(&source, &p.source) && plan.same_as(&p.plan);
                let path = match same {
                    true => {
                        p.drop_lost_slowdown(self);
                        p
                    }
                    false => {
                        retired.push(p.clone());
                        let names = (p.site.clone(), p.key.clone(), p.domain().into());
                        let new = Arc::new(Path::new(
                            source,
                            names,
                            plan,
                            Some(&p),
                            self.settings.max_ready,
                        ));
                        new.restore_slowdown(self);
                        new
                    }
                };
                paths.insert(key, path);
            }
        }
        for p in &retired {
            p.stop();
        }
        {
            let mut r = self.retired.lock().unwrap_or_else(|p| p.into_inner());
            r.extend(retired);
            r.retain(|p| p.state().workers > 0);
        }
        self.requeue(ready);
        self.holds_changed();
    }

    /// An operator's "retry now" for mail to `domain` (or all mail): lifts
    /// the dead-site pauses of its site (or all of them), so the mail
    /// waiting for them goes at once; deferred mail is made due by the
    /// caller. Returns the pauses lifted.
    pub async fn retry_now(self: &Arc<Self>, domain: Option<&str>) -> usize {
        let site = match domain {
            Some(d) => match self.site_of(d).await {
                Ok(site) => Some(site),
                Err(_) => return 0,
            },
            None => None,
        };
        let actions = &self.settings.shaper.actions;
        let lifted = actions.lift_pauses(super::dispatch::shaped::DEAD_SITE, site.as_deref());
        if lifted > 0 {
            for p in self.live_paths() {
                if site.as_deref().is_none_or(|s| *s == *p.site) {
                    p.state().failures = 0;
                }
            }
            self.holds_changed();
        }
        lifted
    }
}
