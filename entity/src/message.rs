use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "messages")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub chat_id: Uuid,
    pub seq: i64,
    pub role: String,
    #[sea_orm(column_type = "Text")]
    pub content: String,
    pub status: String,
    #[sea_orm(unique)]
    pub reply_to: Option<Uuid>,
    pub finish_reason: Option<String>,
    pub provider: Option<String>,
    pub model: Option<String>,
    pub prompt_tokens: Option<i32>,
    pub completion_tokens: Option<i32>,
    pub usage_estimated: bool,
    pub cost_micros: Option<i64>,
    pub sources: Option<Json>,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
    /// The version of the chat's agent that produced this answer.
    pub agent_version: Option<i32>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
