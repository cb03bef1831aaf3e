//! A second instance of the same model while the first is alive: does it load, does it
//! generate, and does the first still work after it is destroyed?

use super::answers::Finding;
use super::harness::{Instance, RunRecord};
use super::{gemma_prompt, ProbeConfig};
use crate::diagnosis::{human_bytes, Preflight};
use crate::settings::SecondModel;

const USER: &str = "Say hello.";

/// A run stopped at its first token: enough to see that an instance generates.
fn first_token(model: &mut Instance, config: &ProbeConfig) -> RunRecord {
    let prompt = gemma_prompt(USER);
    let mut plan = config.plan(&prompt);
    plan.abort_at_token = Some(1);
    model.run(&plan)
}

/// RAM a second copy of the model needs: the weights plus a quarter for the KV cache and
/// buffers. Without it the kernel's OOM killer may end the probe instead of `rkllm_init`
/// failing cleanly.
fn needed_ram(model_size: u64) -> u64 {
    model_size + model_size / 4
}

pub(crate) fn probe(first: &mut Instance, config: &ProbeConfig) -> Finding<SecondModel> {
    let preflight = Preflight::new().check(&config.model);
    if let (Some(size), Some(available)) = (preflight.model_size(), preflight.mem_available()) {
        if available < needed_ram(size) {
            return Finding::unclear(format!(
                "not tried: {} of RAM available with the first model loaded, a second copy of \
                 the {} model needs about {}",
                human_bytes(available),
                human_bytes(size),
                human_bytes(needed_ram(size))
            ));
        }
    }
    let second =
        Instance::init(first.runtime(), &config.model, config.main_spec()).map(|mut model| {
            let r = first_token(&mut model, config);
            drop(model);
            r
        });
    let again = first_token(first, config);
    let first_ok = if again.tokens().next().is_some() {
        "the first model still generates afterwards"
    } else {
        "the first model NO LONGER generates afterwards"
    };
    match second {
        Err(failed) => {
            if let Some(reason) = &failed.reason {
                return Finding::failed(format!("the second instance did not load: {reason}"));
            }
            let diagnosis = &failed.diagnosis;
            let said = diagnosis
                .first_error_line()
                .map(|l| format!(", the runtime said: {l}"))
                .unwrap_or_default();
            Finding::known(
                SecondModel::Refused,
                format!(
                    "rkllm_init returned {} (cause: {}){said}; {first_ok}",
                    failed.code,
                    diagnosis.cause().as_str()
                ),
            )
        }
        Ok(r) => {
            if let Some(reason) = r.unusable(config.run_timeout) {
                return Finding::failed(reason);
            }
            let rc = r.return_code.unwrap_or_default();
            if r.tokens().next().is_some() {
                Finding::known(
                    SecondModel::Works,
                    format!("the second instance loaded and generated; {first_ok}"),
                )
            } else {
                Finding::known(
                    SecondModel::LoadsButRunFails,
                    format!(
                        "the second instance loaded, but its run gave no token (rkllm_run \
                         returned {rc}, ERROR {}); {first_ok}",
                        if r.errored() { "yes" } else { "no" }
                    ),
                )
            }
        }
    }
}
