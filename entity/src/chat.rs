use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "chats")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub workspace_id: Uuid,
    pub name: String,
    pub end_user_id: Option<String>,
    pub agent_id: Option<Uuid>,
    pub created_via: String,
    pub provider: Option<String>,
    pub model: Option<String>,
    #[sea_orm(column_type = "Text", nullable)]
    pub system_prompt: Option<String>,
    pub temperature: Option<f64>,
    pub max_tokens: Option<i32>,
    pub top_p: Option<f64>,
    pub agent_framework: Option<String>,
    pub metadata: Option<Json>,
    pub status: String,
    #[sea_orm(unique)]
    pub public_link_id: Option<Uuid>,
    pub last_seq: i64,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
