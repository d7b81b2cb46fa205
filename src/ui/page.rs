//! The data behind the operator page: the org table, the traffic of the
//! last 15 minutes and what authentication trusts, gathered into one
//! [`PageData`] that the HTML and the JSON both show.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::activity::{ActivityView, TenantView};
use crate::auth::Inventory;
use crate::table::Org;

use super::OperatorPage;

/// Most namespaces listed per organization (the rest are counted).
pub const MAX_NAMESPACES_SHOWN: usize = 50;

/// Everything the page shows.
#[derive(Debug, Serialize)]
pub struct PageData {
    /// Unix seconds.
    pub generated_at: u64,
    pub version: &'static str,
    pub table: TableView,
    pub routing: RoutingView,
    /// Organizations of the table and tenants seen in traffic, busiest
    /// first, at most `ui.top`.
    pub organizations: Vec<OrganizationRow>,
    /// How many there are in all.
    pub organizations_total: usize,
    pub activity: ActivityView,
    pub credentials: Inventory,
}

/// Where the namespace table comes from and what it holds.
#[derive(Debug, Serialize)]
pub struct TableView {
    /// `file PATH`, `kubernetes ...`, or why there is none.
    pub source: String,
    pub synced: bool,
    /// Unix seconds of the last successful load or watch event.
    pub last_sync: Option<u64>,
    pub namespaces: usize,
    pub organizations: usize,
    /// Namespaces whose organization is not a valid tenant ID (at most
    /// `ui.top`), with why.
    pub invalid: Vec<(String, String)>,
}

/// How unmapped data is handled.
#[derive(Debug, Clone, Serialize)]
pub struct RoutingView {
    pub mode: String,
    pub unmapped: String,
    pub default_tenant: Option<String>,
    pub outside_allowance: String,
}

/// One organization: its namespaces and its traffic.
#[derive(Debug, Serialize)]
pub struct OrganizationRow {
    pub organization: String,
    pub namespaces: Vec<String>,
    pub namespaces_total: usize,
    /// Whether the table names it (else it was only seen in traffic: the
    /// default tenant, label mode, a principal's own tenant).
    pub in_table: bool,
    /// Its last 15 minutes, if it sent anything.
    pub traffic: Option<TenantView>,
}

impl OperatorPage {
    /// Gathers the page's data now.
    pub fn data(&self) -> PageData {
        let top = self.settings.top;
        let mut activity = self.activity.view(top);
        let snapshot = self.table.snapshot();
        let mut orgs: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        let mut invalid = Vec::new();
        for (namespace, org) in snapshot.iter() {
            match org {
                Org::Tenant(t) => orgs.entry(t.as_str()).or_default().push(namespace),
                Org::Invalid(e) => {
                    if invalid.len() < top {
                        invalid.push((namespace.to_owned(), e.to_string()));
                    }
                }
            }
        }
        invalid.sort();
        let table = TableView {
            source: self.source.clone(),
            synced: self.table.is_synced(),
            last_sync: Some(self.table.last_sync()).filter(|s| *s > 0),
            namespaces: snapshot.len(),
            organizations: orgs.len(),
            invalid,
        };
        // Busiest first (the activity view is sorted so), then the quiet
        // ones of the table by name.
        let mut organizations = Vec::new();
        let mut listed = std::collections::HashSet::new();
        let row = |name: &str, traffic: Option<TenantView>| {
            let namespaces = orgs.get(name);
            let mut shown: Vec<String> = namespaces
                .map(|n| n.iter().map(|s| (*s).to_owned()).collect())
                .unwrap_or_default();
            shown.sort();
            let total = shown.len();
            shown.truncate(MAX_NAMESPACES_SHOWN);
            OrganizationRow {
                organization: name.to_owned(),
                namespaces: shown,
                namespaces_total: total,
                in_table: namespaces.is_some(),
                traffic,
            }
        };
        for t in &activity.tenants {
            listed.insert(t.tenant.clone());
            organizations.push(row(&t.tenant, Some(t.clone())));
        }
        let quiet = orgs.keys().filter(|o| !listed.contains(**o)).count();
        let organizations_total = activity.tenants_total + quiet;
        for org in orgs.keys().filter(|o| !listed.contains(**o)) {
            if organizations.len() >= top {
                break;
            }
            organizations.push(row(org, None));
        }
        // The traffic is in the rows; the JSON need not carry it twice.
        activity.tenants.clear();
        PageData {
            generated_at: activity.now,
            version: env!("CARGO_PKG_VERSION"),
            table,
            routing: self.routing.clone(),
            organizations,
            organizations_total,
            activity,
            credentials: self.auth.inventory(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use crate::activity::{Activity, TenantPush};
    use crate::auth::Authenticator;
    use crate::config::Config;
    use crate::signals::{Counts, Signal};
    use crate::table::{OrgTable, Snapshot};
    use crate::ui::OperatorPage;

    #[test]
    fn rows_and_namespaces_stop_at_their_bounds_busiest_first() {
        // "big" has 60 namespaces; five quiet organizations of one each.
        let mut pairs: Vec<(String, String)> = (0..60)
            .map(|i| (format!("big-{i:02}"), "big".into()))
            .collect();
        pairs.extend((0..5).map(|i| (format!("q-{i}"), format!("quiet-{i}"))));
        let table = OrgTable::with(Snapshot::from_pairs(pairs));
        let mut config = Config::default();
        config.ui.top = 3;
        let activity = Arc::new(Activity::new());
        let counts = Counts {
            series: 1,
            samples: 10,
            ..Default::default()
        };
        activity.request(
            Signal::Metrics,
            &Default::default(),
            ["quiet-4", "big"].map(|tenant| TenantPush {
                tenant,
                counts: &counts,
                bytes: 10,
                status: None,
                class: "2xx",
                took: std::time::Duration::from_millis(1),
            }),
        );
        let auth = Arc::new(Authenticator::new(&config.auth, Default::default()).unwrap());
        let data = OperatorPage::new(&config, table, activity, auth).data();
        assert_eq!(data.organizations_total, 6);
        let names: Vec<&str> = data
            .organizations
            .iter()
            .map(|o| o.organization.as_str())
            .collect();
        // Those with traffic first, then the quiet ones by name, 3 in all.
        assert_eq!(names, ["big", "quiet-4", "quiet-0"]);
        let big = &data.organizations[0];
        assert_eq!(big.namespaces.len(), super::MAX_NAMESPACES_SHOWN);
        assert_eq!(big.namespaces_total, 60);
        assert_eq!(big.namespaces[0], "big-00");
        assert_eq!(data.table.namespaces, 65);
        assert_eq!(data.table.organizations, 6);
    }
}
