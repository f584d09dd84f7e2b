//! Application secrets (Meta app secret, webhook verify token, cursor key) from AWS Secrets
//! Manager, resolved once at init.
//!
//! Contract: for each variable `NAME` asked for, [`resolve`] reads the secret named by
//! `NAME_SECRET_ID` (a name or ARN; on AWS the template sets it to the secret's ARN) with one
//! `GetSecretValue` (all concurrently) and returns the environment with `NAME` set to its value,
//! for the usual parsers (`Env::webhook_secrets`, `Env::cursor_secret`). Without
//! `NAME_SECRET_ID` the plaintext variable `NAME` is used as it is: that fallback exists for
//! local runs outside the stack only (`make dev` and the tests resolve from the local endpoint
//! too). Secret values are never logged.

use crate::config::Env;

#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    #[error("secret for {name} could not be read: {reason}")]
    Read { name: &'static str, reason: String },
    #[error("secret for {name} has no string value")]
    Empty { name: &'static str },
}

/// Variable → logical id in `template.yaml` of the secret that holds it.
pub const SECRET_ENV: &[(&str, &str)] = &[
    ("WHATSAPP_APP_SECRET", "MetaAppSecret"),
    ("WHATSAPP_VERIFY_TOKEN", "MetaVerifyToken"),
    ("CURSOR_SECRET", "CursorKey"),
];

/// The variable naming the secret that holds `name`.
pub fn secret_id_var(name: &str) -> String {
    format!("{name}_SECRET_ID")
}

/// `env` with every variable of `names` taken from Secrets Manager where a secret is named.
pub async fn resolve(env: Env, sdk: &aws_config::SdkConfig, names: &[&'static str]) -> Result<Env, SecretsError> {
    let wanted: Vec<(&'static str, String)> = names
        .iter()
        .filter_map(|n| env.get(&secret_id_var(n)).map(|id| (*n, id.to_owned())))
        .collect();
    if wanted.is_empty() {
        return Ok(env);
    }
    let client = aws_sdk_secretsmanager::Client::new(sdk);
    let reads = wanted.iter().map(|(name, id)| {
        let client = client.clone();
        async move {
            let out = client
                .get_secret_value()
                .secret_id(id)
                .send()
                .await
                .map_err(|e| SecretsError::Read {
                    name,
                    // The error names the secret, never its value.
                    reason: aws_sdk_secretsmanager::error::DisplayErrorContext(&e).to_string(),
                })?;
            let value = out.secret_string.ok_or(SecretsError::Empty { name })?;
            Ok::<_, SecretsError>((*name, value))
        }
    });
    let mut env = env;
    for result in futures::future::join_all(reads).await {
        let (name, value) = result?;
        env = env.with_var(name, value);
    }
    Ok(env)
}
