//! `[zones]`: where the catalog and the local zone files are, and which tenant-location rows
//! apply.

use std::path::PathBuf;

use serde::Deserialize;
use toml::Spanned;

use super::ConfigError;
use super::section::{Ctx, Reload, ReloadPlan};

/// A tenant location, for the catalog's rows that Microsoft splits by Azure scale-unit region
/// (Win32 and macOS CDNs, MAA attestation): what `tenant_regions` selects. Defined with the
/// configuration that selects it; zone files name it in `tenant_region`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TenantRegion {
    /// North America.
    Na,
    /// Europe.
    Eu,
    /// Asia Pacific.
    Ap,
}

impl TenantRegion {
    /// `na`, `eu` or `ap`, as zone files and ids write it.
    pub fn as_str(self) -> &'static str {
        match self {
            TenantRegion::Na => "na",
            TenantRegion::Eu => "eu",
            TenantRegion::Ap => "ap",
        }
    }
}

/// `[zones]` as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawZones {
    /// One directory (the shipped catalog): the short form of `dirs`.
    dir: Option<PathBuf>,
    /// The shipped catalog first, then local directories.
    dirs: Option<Spanned<Vec<Spanned<PathBuf>>>>,
    tenant_regions: Vec<TenantRegion>,
}

impl Default for RawZones {
    fn default() -> Self {
        RawZones {
            dir: None,
            dirs: None,
            tenant_regions: vec![TenantRegion::Na, TenantRegion::Eu, TenantRegion::Ap],
        }
    }
}

/// `[zones]`.
#[derive(Debug, Clone)]
pub struct ZonesConfig {
    /// The shipped catalog's directory first, then local zone directories (missing ones add
    /// nothing), each resolved against the config file's directory.
    pub dirs: Vec<PathBuf>,
    /// Which tenant-location rows apply.
    pub tenant_regions: Vec<TenantRegion>,
}

impl RawZones {
    pub(super) fn validate(&self, ctx: &Ctx) -> Result<ZonesConfig, ConfigError> {
        let dirs = match (&self.dir, &self.dirs) {
            (Some(_), Some(d)) => {
                return Err(ctx.at(
                    ctx.line(d),
                    "zones.dir",
                    "give zones.dirs or zones.dir, not both",
                ));
            }
            (_, Some(d)) if d.get_ref().is_empty() => {
                return Err(ctx.at(
                    ctx.line(d),
                    "dirs = []",
                    "zones.dirs needs the catalog's directory first",
                ));
            }
            (_, Some(d)) => d.get_ref().iter().map(|s| ctx.path(s.get_ref())).collect(),
            (Some(d), None) => vec![ctx.path(d)],
            (None, None) => vec![ctx.path("../zones".as_ref())],
        };
        Ok(ZonesConfig {
            dirs,
            tenant_regions: self.tenant_regions.clone(),
        })
    }
}

impl Reload for ZonesConfig {
    fn reload(&self, new: &Self, plan: &mut ReloadPlan) {
        let ZonesConfig {
            dirs,
            tenant_regions,
        } = self;
        // The catalog is loaded and compiled anew.
        plan.check("zones.dirs", *dirs != new.dirs, true);
        plan.check(
            "zones.tenant_regions",
            *tenant_regions != new.tenant_regions,
            true,
        );
    }
}
