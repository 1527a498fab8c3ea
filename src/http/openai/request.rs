//! Checks an OpenAI chat-completions request and splits it into what sluice reads itself
//! (`model`, `messages`, `stream`, `stream_options`) and what it relays to the provider as given.
//! Errors name the offending field in OpenAI's `param` style (`messages[1].role`).

use serde_json::{Map, Value};

use crate::error::Error;
use crate::service::CompletionInput;

pub use schema::ChatCompletionRequest;

pub struct Parsed {
    pub input: CompletionInput,
    pub stream: bool,
    pub include_usage: bool,
}

const ROLES: &[&str] = &[
    "system",
    "developer",
    "user",
    "assistant",
    "tool",
    "function",
];

fn bad(field: impl Into<String>, message: impl Into<String>) -> Error {
    Error::bad_request(field, message)
}

fn number_in(body: &Map<String, Value>, field: &str, min: f64, max: f64) -> Result<(), Error> {
    match body.get(field) {
        None | Some(Value::Null) => Ok(()),
        Some(v) => match v.as_f64() {
            Some(x) if (min..=max).contains(&x) => Ok(()),
            _ => Err(bad(
                field,
                format!("`{field}` must be a number from {min} to {max}"),
            )),
        },
    }
}

/// An integer field, `3` or `3.0` (JSON Schema's `integer` admits both), rewritten as `3` for
/// providers that take only that; `Err` when it is not a whole number.
fn integer(body: &mut Map<String, Value>, field: &str) -> Result<Option<i128>, ()> {
    let Some(value) = body.get_mut(field).filter(|v| !v.is_null()) else {
        return Ok(None);
    };
    if let Some(n) = value.as_i64() {
        return Ok(Some(n.into()));
    }
    if let Some(n) = value.as_u64() {
        return Ok(Some(n.into()));
    }
    let whole = value
        .as_f64()
        .and_then(crate::http::whole::exact)
        .ok_or(())?;
    *value = Value::from(whole);
    Ok(Some(whole.into()))
}

fn positive_integer(body: &mut Map<String, Value>, field: &str) -> Result<(), Error> {
    match integer(body, field) {
        Ok(None) => Ok(()),
        Ok(Some(n)) if n > 0 => Ok(()),
        _ => Err(bad(field, format!("`{field}` must be a positive integer"))),
    }
}

fn check_message(index: usize, message: &Value) -> Result<(), Error> {
    let field = |name: &str| format!("messages[{index}].{name}");
    let object = message.as_object().ok_or_else(|| {
        bad(
            format!("messages[{index}]"),
            "each message must be an object",
        )
    })?;
    let role = object
        .get("role")
        .and_then(Value::as_str)
        .ok_or_else(|| bad(field("role"), "each message needs a `role`"))?;
    if !ROLES.contains(&role) {
        return Err(bad(
            field("role"),
            format!("`{role}` is not one of {}", ROLES.join(", ")),
        ));
    }
    match object.get("content") {
        Some(Value::String(_)) => {}
        Some(Value::Array(parts)) => {
            for (p, part) in parts.iter().enumerate() {
                if part.get("type").and_then(Value::as_str).is_none() {
                    return Err(bad(
                        format!("messages[{index}].content[{p}].type"),
                        "each content part needs a `type`",
                    ));
                }
            }
        }
        None | Some(Value::Null) if role == "assistant" => {}
        _ => {
            return Err(bad(
                field("content"),
                "`content` must be a string or an array of content parts",
            ));
        }
    }
    if object
        .get("name")
        .is_some_and(|name| !name.is_null() && !name.is_string())
    {
        return Err(bad(field("name"), "`name` must be a string"));
    }
    match object.get("tool_calls") {
        None | Some(Value::Null) => {}
        Some(Value::Array(calls)) if calls.iter().all(Value::is_object) => {}
        Some(_) => {
            return Err(bad(
                field("tool_calls"),
                "`tool_calls` must be an array of objects",
            ));
        }
    }
    if role == "tool" && object.get("tool_call_id").and_then(Value::as_str).is_none() {
        return Err(bad(
            field("tool_call_id"),
            "a `tool` message needs a `tool_call_id`",
        ));
    }
    Ok(())
}

pub fn parse(body: Value) -> Result<Parsed, Error> {
    let Value::Object(mut body) = body else {
        return Err(Error::BadRequest {
            field: None,
            message: "the body must be a JSON object".into(),
        });
    };
    let model = match body.remove("model") {
        Some(Value::String(m)) if !m.trim().is_empty() => m,
        Some(_) => return Err(bad("model", "`model` must be a non-empty string")),
        None => return Err(bad("model", "`model` is required")),
    };
    let messages = match body.remove("messages") {
        Some(Value::Array(m)) if !m.is_empty() => m,
        Some(Value::Array(_)) => return Err(bad("messages", "`messages` must not be empty")),
        Some(_) => return Err(bad("messages", "`messages` must be an array")),
        None => return Err(bad("messages", "`messages` is required")),
    };
    for (i, m) in messages.iter().enumerate() {
        check_message(i, m)?;
    }
    let stream = match body.remove("stream") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => b,
        Some(_) => return Err(bad("stream", "`stream` must be a boolean")),
    };
    let include_usage = match body.remove("stream_options") {
        None | Some(Value::Null) => false,
        Some(Value::Object(o)) => match o.get("include_usage") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => {
                return Err(bad(
                    "stream_options.include_usage",
                    "`include_usage` must be a boolean",
                ));
            }
        },
        Some(_) => return Err(bad("stream_options", "`stream_options` must be an object")),
    };
    match integer(&mut body, "n") {
        Ok(None | Some(1)) => {
            body.remove("n");
        }
        _ => return Err(bad("n", "only `n: 1` is supported")),
    }
    number_in(&body, "temperature", 0.0, 2.0)?;
    number_in(&body, "top_p", 0.0, 1.0)?;
    positive_integer(&mut body, "max_tokens")?;
    positive_integer(&mut body, "max_completion_tokens")?;
    match body.get("stop") {
        None | Some(Value::Null | Value::String(_)) => {}
        Some(Value::Array(a)) if a.len() <= 4 && a.iter().all(Value::is_string) => {}
        Some(_) => return Err(bad("stop", "`stop` must be a string or up to 4 strings")),
    }
    if !matches!(
        integer(&mut body, "seed"),
        Ok(None) | Ok(Some(-0x8000_0000_0000_0000..=0x7fff_ffff_ffff_ffff))
    ) {
        return Err(bad("seed", "`seed` must be an integer"));
    }
    if body.get("response_format").is_some_and(|format| {
        !format.is_null() && format.get("type").and_then(Value::as_str).is_none()
    }) {
        return Err(bad("response_format", "`response_format` needs a `type`"));
    }
    if let Some(tools) = body.get("tools").filter(|v| !v.is_null()) {
        let tools = tools
            .as_array()
            .ok_or_else(|| bad("tools", "`tools` must be an array"))?;
        for (i, tool) in tools.iter().enumerate() {
            if tool
                .get("type")
                .is_some_and(|t| !t.is_null() && !t.is_string())
            {
                return Err(bad(
                    format!("tools[{i}].type"),
                    "a tool's `type` must be a string",
                ));
            }
            let named = tool
                .get("function")
                .and_then(|f| f.get("name"))
                .and_then(Value::as_str)
                .is_some_and(|n| !n.is_empty());
            if !named {
                return Err(bad(
                    format!("tools[{i}].function.name"),
                    "each tool needs a function with a `name`",
                ));
            }
            let function = tool.get("function");
            let parameters = function.and_then(|f| f.get("parameters"));
            if parameters.is_some_and(|p| !p.is_null() && !p.is_object()) {
                return Err(bad(
                    format!("tools[{i}].function.parameters"),
                    "a function's `parameters` must be a JSON Schema object",
                ));
            }
            let description = function.and_then(|f| f.get("description"));
            if description.is_some_and(|d| !d.is_null() && !d.is_string()) {
                return Err(bad(
                    format!("tools[{i}].function.description"),
                    "a function's `description` must be a string",
                ));
            }
        }
    }
    if body
        .get("user")
        .is_some_and(|user| !user.is_null() && !user.is_string())
    {
        return Err(bad("user", "`user` must be a string"));
    }
    // Null fields mean "not set"; relaying them would make some servers fail on `null`.
    body.retain(|_, v| !v.is_null());
    Ok(Parsed {
        input: CompletionInput {
            model,
            messages,
            params: body,
        },
        stream,
        include_usage,
    })
}

/// The request as the API description shows it. A description only: the handler takes the body
/// as JSON and `parse` checks it, so that every field not named here still reaches the provider
/// unchanged. The test below keeps the roles in step with `ROLES`.
mod schema {
    #![allow(dead_code)]

    use std::collections::BTreeMap;

    use serde_json::Value;
    use utoipa::ToSchema;

    /// An OpenAI chat-completions request. Fields not listed are relayed to the provider as
    /// given; a field the provider cannot honour is a 400 naming it.
    #[derive(ToSchema)]
    pub struct ChatCompletionRequest {
        /// `provider/model`, a model listed under a provider, or an alias.
        #[schema(examples("openai/gpt-4o-mini"), min_length = 1, format = "nonblank")]
        model: String,
        #[schema(min_items = 1)]
        messages: Vec<RequestMessage>,
        /// Answer as an event stream of `chat.completion.chunk` objects.
        stream: Option<bool>,
        stream_options: Option<StreamOptions>,
        #[schema(minimum = 0, maximum = 2)]
        temperature: Option<f64>,
        #[schema(minimum = 0, maximum = 1)]
        top_p: Option<f64>,
        /// At most the model's cap (its provider's `max_tokens` setting, 131072 by default).
        #[schema(minimum = 1, format = "output-tokens")]
        max_tokens: Option<u64>,
        /// The same limit under its newer name, with the same cap.
        #[schema(minimum = 1, format = "output-tokens")]
        max_completion_tokens: Option<u64>,
        /// Only 1 is supported.
        #[schema(minimum = 1, maximum = 1)]
        n: Option<u64>,
        stop: Option<Stop>,
        seed: Option<i64>,
        response_format: Option<ResponseFormat>,
        tools: Option<Vec<Tool>>,
        /// `none`, `auto`, `required`, or an object naming a function.
        #[schema(value_type = Option<Value>)]
        tool_choice: Option<Value>,
        user: Option<String>,
        #[serde(flatten)]
        other: BTreeMap<String, Value>,
    }

    /// One message of the conversation: which fields it needs follows from its `role`.
    #[derive(ToSchema)]
    #[serde(untagged)]
    #[schema(as = ChatCompletionRequestMessage)]
    pub enum RequestMessage {
        Said(SaidMessage),
        Assistant(AssistantMessage),
        Tool(ToolMessage),
    }

    /// A `system`, `developer`, `user` or `function` message.
    #[derive(ToSchema)]
    #[schema(as = ChatCompletionSaidMessage)]
    pub struct SaidMessage {
        pub role: SaidRole,
        /// Text, or content parts (each with a `type`).
        content: Content,
        name: Option<String>,
        #[serde(flatten)]
        other: BTreeMap<String, Value>,
    }

    /// An earlier answer: its text, its tool calls, or both.
    #[derive(ToSchema)]
    #[schema(as = ChatCompletionAssistantMessage)]
    pub struct AssistantMessage {
        pub role: AssistantRole,
        content: Option<Content>,
        name: Option<String>,
        #[schema(value_type = Option<Vec<Object>>)]
        tool_calls: Option<Vec<Value>>,
        #[serde(flatten)]
        other: BTreeMap<String, Value>,
    }

    /// A tool's result, for the call it names.
    #[derive(ToSchema)]
    #[schema(as = ChatCompletionToolMessage)]
    pub struct ToolMessage {
        pub role: ToolRole,
        content: Content,
        tool_call_id: String,
        #[serde(flatten)]
        other: BTreeMap<String, Value>,
    }

    #[derive(ToSchema)]
    #[serde(rename_all = "lowercase")]
    #[schema(as = ChatCompletionSaidRole)]
    pub enum SaidRole {
        System,
        Developer,
        User,
        Function,
    }

    #[derive(ToSchema)]
    #[serde(rename_all = "lowercase")]
    #[schema(as = ChatCompletionAssistantRole)]
    pub enum AssistantRole {
        Assistant,
    }

    #[derive(ToSchema)]
    #[serde(rename_all = "lowercase")]
    #[schema(as = ChatCompletionToolRole)]
    pub enum ToolRole {
        Tool,
    }

    #[derive(ToSchema)]
    #[serde(untagged)]
    #[schema(as = ChatCompletionContent)]
    pub enum Content {
        Text(String),
        Parts(Vec<ContentPart>),
    }

    #[derive(ToSchema)]
    #[schema(as = ChatCompletionContentPart)]
    pub struct ContentPart {
        /// `text`, `image_url`, …
        #[serde(rename = "type")]
        kind: String,
        #[serde(flatten)]
        other: BTreeMap<String, Value>,
    }

    /// How the answer is to be written: `text`, `json_object`, `json_schema` with its schema.
    #[derive(ToSchema)]
    #[schema(as = ChatCompletionResponseFormat)]
    pub struct ResponseFormat {
        #[serde(rename = "type")]
        kind: String,
        #[serde(flatten)]
        other: BTreeMap<String, Value>,
    }

    #[derive(ToSchema)]
    #[schema(as = ChatCompletionStreamOptions)]
    pub struct StreamOptions {
        /// Send a last chunk with the usage.
        include_usage: Option<bool>,
    }

    /// A string, or up to 4 strings.
    #[derive(ToSchema)]
    #[serde(untagged)]
    #[schema(as = ChatCompletionStop)]
    pub enum Stop {
        One(String),
        Many(StopList),
    }

    #[derive(ToSchema)]
    #[schema(as = ChatCompletionStopList, max_items = 4)]
    pub struct StopList(Vec<String>);

    #[derive(ToSchema)]
    #[schema(as = ChatCompletionTool)]
    pub struct Tool {
        /// `function`.
        #[serde(rename = "type")]
        kind: Option<String>,
        function: FunctionDefinition,
    }

    #[derive(ToSchema)]
    #[schema(as = ChatCompletionFunction)]
    pub struct FunctionDefinition {
        #[schema(min_length = 1)]
        name: String,
        description: Option<String>,
        /// A JSON Schema of the arguments.
        #[schema(value_type = Option<Object>)]
        parameters: Option<Value>,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::{ROLES, parse};

    fn field_of(body: serde_json::Value) -> String {
        parse(body)
            .err()
            .and_then(|e| e.field().map(str::to_owned))
            .unwrap_or_default()
    }

    #[test]
    fn a_valid_request_keeps_every_other_field_for_the_provider() {
        let parsed = parse(json!({
            "model": "m", "messages": [{"role": "user", "content": "hi"}],
            "stream": true, "stream_options": {"include_usage": true},
            "temperature": 0.5, "seed": 7, "logit_bias": {"1": 2}, "user": null
        }))
        .unwrap();
        assert!(parsed.stream && parsed.include_usage);
        assert_eq!(parsed.input.params.len(), 3);
        assert!(parsed.input.params.contains_key("logit_bias"));
    }

    #[test]
    fn errors_name_the_field_in_openai_style() {
        let msg = |m: serde_json::Value| json!({"model": "m", "messages": [m]});
        assert_eq!(field_of(json!({"messages": []})), "model");
        assert_eq!(field_of(json!({"model": "m", "messages": []})), "messages");
        assert_eq!(
            field_of(msg(json!({"role": "robot", "content": "x"}))),
            "messages[0].role"
        );
        assert_eq!(
            field_of(msg(json!({"role": "user", "content": 3}))),
            "messages[0].content"
        );
        assert_eq!(
            field_of(msg(json!({"role": "tool", "content": "x"}))),
            "messages[0].tool_call_id"
        );
        let with = |k: &str, v: serde_json::Value| {
            let mut b = msg(json!({"role": "user", "content": "x"}));
            b[k] = v;
            b
        };
        assert_eq!(field_of(with("temperature", json!(3))), "temperature");
        assert_eq!(field_of(with("n", json!(2))), "n");
        assert_eq!(field_of(with("stop", json!([1]))), "stop");
        assert_eq!(
            field_of(with("tools", json!([{"type": "function"}]))),
            "tools[0].function.name"
        );
        assert_eq!(
            field_of(with(
                "tools",
                json!([{"function": {"name": "f", "parameters": [1]}}])
            )),
            "tools[0].function.parameters"
        );
    }

    #[test]
    fn integers_may_be_spelled_as_whole_floats_and_reach_the_provider_as_integers() {
        let parsed = parse(json!({
            "model": "m", "messages": [{"role": "user", "content": "hi"}],
            "max_tokens": 16.0, "seed": -3.0, "n": 1.0
        }))
        .unwrap();
        assert_eq!(parsed.input.params["max_tokens"], json!(16));
        assert!(parsed.input.params["max_tokens"].is_i64());
        assert_eq!(parsed.input.params["seed"], json!(-3));
        assert!(!parsed.input.params.contains_key("n"));
        let with = |k: &str, v: serde_json::Value| {
            let mut b = json!({"model": "m", "messages": [{"role": "user", "content": "x"}]});
            b[k] = v;
            b
        };
        assert_eq!(field_of(with("max_tokens", json!(16.5))), "max_tokens");
        assert_eq!(field_of(with("max_tokens", json!(0.0))), "max_tokens");
        assert_eq!(field_of(with("seed", json!(1e300))), "seed");
        assert_eq!(field_of(with("n", json!(2.0))), "n");
    }

    #[test]
    fn the_described_roles_are_the_accepted_roles() {
        use super::schema::{AssistantRole, SaidRole, ToolRole};
        use utoipa::PartialSchema;
        let mut described: Vec<String> = [
            SaidRole::schema(),
            AssistantRole::schema(),
            ToolRole::schema(),
        ]
        .into_iter()
        .flat_map(|s| {
            let s = serde_json::to_value(s).unwrap();
            serde_json::from_value::<Vec<String>>(s["enum"].clone()).unwrap()
        })
        .collect();
        let mut accepted: Vec<String> = ROLES.iter().map(|r| r.to_string()).collect();
        described.sort();
        accepted.sort();
        assert_eq!(described, accepted);
    }
}
