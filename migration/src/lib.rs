//! Database migrations, one file per change, named by date. Applied at start-up and by `sluice migrate`.

pub use sea_orm_migration::prelude::*;

mod m20261125_000001_initial;
mod m20261125_000002_web_sessions;
mod m20261206_000003_generation_leases;
mod m20261206_000004_key_rate_limits;
mod m20261206_000005_agents;
mod m20261206_000006_replicas;

pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261125_000001_initial::Migration),
            Box::new(m20261125_000002_web_sessions::Migration),
            Box::new(m20261206_000003_generation_leases::Migration),
            Box::new(m20261206_000004_key_rate_limits::Migration),
            Box::new(m20261206_000005_agents::Migration),
            Box::new(m20261206_000006_replicas::Migration),
        ]
    }
}
