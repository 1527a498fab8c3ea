//! The official `openai` Python SDK against the real server. Runs when SLUICE_TEST_PYTHON names a
//! Python with `openai` installed (`.ci/run` makes one); skipped with a message otherwise, except
//! in CI, where a skip is a failure.

use crate::helpers::*;

#[tokio::test]
async fn the_official_python_sdk_works_unchanged() {
    let Some(python) = std::env::var("SLUICE_TEST_PYTHON")
        .ok()
        .filter(|p| !p.is_empty())
    else {
        assert!(
            std::env::var("CI").is_err(),
            "CI must run the OpenAI SDK test: set SLUICE_TEST_PYTHON"
        );
        eprintln!("skipped: set SLUICE_TEST_PYTHON to a Python with `openai` installed");
        return;
    };
    let app = spawn_app().await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/sdk/openai_sdk_check.py");

    let output = tokio::process::Command::new(python)
        .arg(script)
        .env("SLUICE_BASE_URL", &app.base)
        .env("SLUICE_KEY", &app.key)
        .env("MOCK_URL", format!("http://{}", app.mock.addr()))
        .output()
        .await
        .expect("run python");

    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains(" passed, 0 failed"), "{stdout}");
}
