//! Generation leases: the running process writes its owner id and renews a heartbeat; recovery
//! touches only generations whose owner is gone, by either rule a deployment chooses.

use std::time::Duration;

use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use sluice::store::{NewGeneration, Orphans};
use uuid::Uuid;

use crate::helpers::{TestApp, spawn_app};
use crate::lifecycle::slow;

fn free(_: &str, _: &str, _: sluice::domain::Usage) -> i64 {
    0
}

async fn generation_of(app: &TestApp, chat_id: Uuid) -> entity::generation::Model {
    entity::generation::Entity::find()
        .filter(entity::generation::Column::ChatId.eq(chat_id))
        .one(app.services.store().connection())
        .await
        .unwrap()
        .expect("a generation row")
}

#[tokio::test]
async fn a_running_answer_carries_its_owner_and_a_heartbeat_that_is_renewed() {
    let app = spawn_app().await;
    app.mock.push(slow(45, 100));
    let chat = app.chat_with_question("long").await;
    let chat_id: Uuid = chat.parse().unwrap();
    let mut sse = app
        .stream(&format!("/conversations/inference/{chat}"), None)
        .await;
    assert_eq!(sse.next().await.unwrap().event, "message");
    let first = generation_of(&app, chat_id).await;
    assert!(first.owner_id.is_some());
    let started = first.heartbeat_at.expect("a heartbeat from the start");

    crate::helpers::eventually(Duration::from_secs(8), || async {
        generation_of(&app, chat_id).await.heartbeat_at > Some(started)
    })
    .await;
    // The owner is alive: a recovery by its own rule leaves the answer running.
    let store = app.services.store();
    let owner = first.owner_id.unwrap();
    assert_eq!(
        store
            .recover_interrupted(Orphans::NotOwnedBy(owner), &free)
            .await
            .unwrap(),
        0
    );
    let silent_since = sluice::store::now() - chrono::TimeDelta::seconds(30);
    assert_eq!(
        store
            .recover_interrupted(
                Orphans::SilentSince {
                    since: silent_since,
                    except: Uuid::nil(),
                },
                &free
            )
            .await
            .unwrap(),
        0
    );
    sse.disconnect();
}

#[tokio::test]
async fn recovery_takes_only_the_generations_whose_owner_is_gone() {
    let app = spawn_app().await;
    let store = app.services.store();
    let (alive, gone) = (Uuid::now_v7(), Uuid::now_v7());
    let mut chats = Vec::new();
    for owner in [alive, gone] {
        let chat = app.create_chat("leased").await;
        let question = app.ask(&chat, "q").await;
        let new = NewGeneration {
            message_id: Uuid::now_v7(),
            workspace_id: app.services.default_workspace,
            chat_id: chat.parse().unwrap(),
            reply_to: question.parse().unwrap(),
            provider: "mock".into(),
            model: "m".into(),
            prompt_tokens: 3,
            owner,
            replaces: None,
            agent_version: None,
        };
        let written = store.write_batch(&[new], &[]).await.unwrap();
        assert!(written.started[0].is_ok());
        chats.push(chat.parse::<Uuid>().unwrap());
    }

    // Another live process: only the generation of the owner that is gone is recovered.
    let recovered = store
        .recover_interrupted(Orphans::NotOwnedBy(alive), &free)
        .await
        .unwrap();
    assert_eq!(recovered, 1);
    let status = |chat: Uuid| async move {
        store
            .list_messages(chat, false)
            .await
            .unwrap()
            .into_iter()
            .find(|m| m.role == "assistant")
            .unwrap()
            .status
    };
    assert_eq!(status(chats[0]).await, "streaming");
    assert_eq!(status(chats[1]).await, "incomplete");
    assert_eq!(
        generation_of(&app, chats[1]).await.error_code.as_deref(),
        Some("interrupted")
    );

    // By heartbeat: a lease renewed now is not silent; one silent past the deadline is.
    assert_eq!(store.renew_leases(alive).await.unwrap(), 1);
    let before_renewal = sluice::store::now() - chrono::TimeDelta::seconds(10);
    assert_eq!(
        store
            .recover_interrupted(
                Orphans::SilentSince {
                    since: before_renewal,
                    except: Uuid::nil(),
                },
                &free
            )
            .await
            .unwrap(),
        0
    );
    tokio::time::sleep(Duration::from_millis(20)).await;
    let after_renewal = sluice::store::now();
    assert_eq!(
        store
            .recover_interrupted(
                Orphans::SilentSince {
                    since: after_renewal,
                    except: Uuid::nil(),
                },
                &free
            )
            .await
            .unwrap(),
        1
    );
    assert_eq!(status(chats[0]).await, "incomplete");
}
