//! Every input kind, hidden states, LoRA, the prompt cache and the builder's checks.

mod common;

use rkllm::mock::{InitFailure, MockModel};
use rkllm::{Error, GenerateOptions, Input, Model, Runtime};

#[test]
fn embeddings_and_multimodal_inputs_run_and_their_shapes_are_checked() {
    let model = common::load(&MockModel::new().answer("seen").embed_dim(8));
    let mut session = model.session().unwrap();
    let done = session
        .complete(
            Input::embeddings(vec![0.5; 3 * 8], 3),
            &GenerateOptions::gemma(),
        )
        .unwrap();
    assert_eq!(done.text, "seen");
    assert_eq!(done.timings.prompt_tokens, Some(3));
    let done = session
        .complete(
            Input::multimodal("<image>what is it?", vec![0.25; 2 * 8], 2),
            &GenerateOptions::gemma(),
        )
        .unwrap();
    assert_eq!(done.text, "seen");

    let opts = GenerateOptions::new();
    for bad in [
        Input::embeddings(vec![0.5; 7], 3),
        Input::embeddings(Vec::<f32>::new(), 0),
        Input::multimodal("x", vec![0.5; 5], 2),
        Input::tokens(Vec::<u32>::new()),
        Input::tokens(vec![5, u32::MAX]),
    ] {
        let err = session.generate(bad.clone(), &opts).unwrap_err();
        assert!(matches!(err, Error::InvalidInput(_)), "{bad:?}: {err:?}");
    }
    // Rows must have the model's embedding size (measured through the runtime), else the
    // runtime would read past the buffer: 3 rows of 5 floats is not 3 × 8.
    assert_eq!(session.embedding_size().unwrap(), 8);
    for bad in [
        Input::embeddings(vec![0.5; 15], 3),
        Input::multimodal("x", vec![0.5; 16 * 2], 2),
    ] {
        let err = session.generate(bad.clone(), &opts).unwrap_err();
        assert!(
            matches!(err, Error::InvalidInput(ref m) if m.contains("8 floats")),
            "{bad:?}: {err:?}"
        );
    }
}

#[test]
fn nul_bytes_are_refused_with_the_field_name() {
    let model = common::load(&MockModel::new());
    let mut session = model.session().unwrap();
    let err = session
        .generate("hello\0world", &GenerateOptions::new())
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Nul {
                field: "prompt",
                position: 5
            }
        ),
        "{err:?}"
    );
    let err = Model::builder("bad\0path")
        .runtime(Runtime::mock())
        .build()
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Nul {
                field: "model_path",
                position: 3
            }
        ),
        "{err:?}"
    );
    let err = model.load_lora("/tmp/x", "na\0me", 1.0).unwrap_err();
    assert!(
        matches!(
            err,
            Error::Nul {
                field: "lora_adapter_name",
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn hidden_states_are_copied_with_their_shape() {
    let dim = 8;
    let model = common::load(&MockModel::new().embed_dim(dim));
    let mut session = model.session().unwrap();
    let ids = common::ids_of(rkllm::mock::BuiltinTokenizer.encode("<bos>hidden layer"));
    let states = session.hidden_states(Input::tokens(ids.clone())).unwrap();
    assert_eq!(states.num_tokens(), ids.len());
    assert_eq!(states.embd_size(), dim);
    assert_eq!(states.data().len(), ids.len() * dim);
    for (row, &id) in ids.iter().enumerate() {
        let expected: Vec<f32> = (0..dim)
            .map(|d| rkllm::mock::hidden_value(id as i32, d, dim))
            .collect();
        assert_eq!(states.row(row).unwrap(), expected.as_slice(), "row {row}");
    }
}

#[test]
fn lora_adapters_are_selected_by_typed_value() {
    let mock = MockModel::new()
        .answer("base answer")
        .lora_answer("pirate", "arr matey");
    let model = common::load(&mock);
    let adapter_file = common::temp_file("pirate.rkllm", b"lora");
    let pirate = model.load_lora(&adapter_file, "pirate", 1.0).unwrap();
    assert_eq!(pirate.name(), "pirate");
    let mut session = model.session().unwrap();
    let base = session.complete("q", &GenerateOptions::gemma()).unwrap();
    assert_eq!(base.text, "base answer");
    let with = session
        .complete("q", &GenerateOptions::gemma().lora(&pirate))
        .unwrap();
    assert_eq!(with.text, "arr matey");

    // An adapter of another model (same name!) is refused, not silently run as base.
    let other = common::load(&mock);
    let foreign = other.load_lora(&adapter_file, "pirate", 1.0).unwrap();
    let err = session
        .complete("q", &GenerateOptions::gemma().lora(&foreign))
        .unwrap_err();
    assert!(
        matches!(err, Error::UnknownLora { ref name } if name == "pirate"),
        "{err:?}"
    );

    // A missing adapter file is the runtime's refusal.
    let err = model
        .load_lora("/nonexistent/adapter.rkllm", "x", 1.0)
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Call {
                func: "rkllm_load_lora",
                code: -1
            }
        ),
        "{err:?}"
    );
    assert!(matches!(
        model.load_lora(&adapter_file, "y", f32::NAN),
        Err(Error::InvalidParameter { .. })
    ));
}

#[test]
fn prompt_cache_save_and_load() {
    let mock = MockModel::new().echo();
    let path = mock.write_temp_file().unwrap();
    let model = Model::builder(&path)
        .runtime(Runtime::mock())
        .build()
        .unwrap();
    let mut session = model.session().unwrap();
    let cache = common::temp_path("cache.bin");
    let prefix = "<bos><start_of_turn>user\nYou are terse.\n\nFirst question<end_of_turn>\n<start_of_turn>model\n";
    let done = session
        .complete(prefix, &GenerateOptions::gemma().save_prompt_cache(&*cache))
        .unwrap();
    assert_eq!(done.text, "You are terse.\n\nFirst question");
    assert!(cache.exists(), "the runtime wrote the cache file");

    let longer = format!("{prefix}answer<end_of_turn>\n<start_of_turn>user\nSecond<end_of_turn>\n<start_of_turn>model\n");
    {
        let mut guard = session.load_prompt_cache(&*cache).unwrap();
        assert_eq!(guard.path(), &*cache);
        let done = guard
            .complete(longer.as_str(), &GenerateOptions::gemma())
            .unwrap();
        assert_eq!(done.text, "Second");
        let stats = rkllm::mock::runs_of_model(&path).pop().unwrap();
        assert!(
            stats.reused_tokens > 0,
            "the cached prefix was reused: {stats:?}"
        );
        assert_eq!(
            stats.reused_tokens + stats.prefilled_tokens,
            stats.prompt_tokens
        );
    }
    // Released on drop: the same prompt now reuses nothing.
    session
        .complete(longer.as_str(), &GenerateOptions::gemma())
        .unwrap();
    let stats = rkllm::mock::runs_of_model(&path).pop().unwrap();
    assert_eq!(stats.reused_tokens, 0, "{stats:?}");
    // A missing cache file is the runtime's refusal.
    let err = session
        .load_prompt_cache(common::temp_path("missing.bin"))
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Call {
                func: "rkllm_load_prompt_cache",
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn builder_values_are_validated_before_the_runtime_is_touched() {
    let path = MockModel::new().write_temp_file().unwrap();
    let b = || Model::builder(&path).runtime(Runtime::mock());
    let cases: Vec<(&str, rkllm::ModelBuilder)> = vec![
        ("max_context_len", b().max_context_len(0)),
        ("max_new_tokens", b().max_new_tokens(0)),
        ("top_k", b().top_k(0)),
        ("top_p", b().top_p(0.0)),
        ("top_p", b().top_p(1.5)),
        ("temperature", b().temperature(-0.1)),
        ("temperature", b().temperature(f32::NAN)),
        ("repeat_penalty", b().repeat_penalty(0.0)),
        ("frequency_penalty", b().frequency_penalty(2.5)),
        ("presence_penalty", b().presence_penalty(-3.0)),
        (
            "mirostat_tau",
            b().mirostat(rkllm::Mirostat::V2 { tau: 0.0, eta: 0.1 }),
        ),
        ("base_domain_id", b().base_domain_id(-1)),
    ];
    for (name, builder) in cases {
        match builder.build() {
            Err(Error::InvalidParameter { name: n, reason }) => {
                assert_eq!(n, name);
                assert!(!reason.is_empty());
            }
            other => panic!("{name}: expected InvalidParameter, got {other:?}"),
        }
    }
    let ok = b()
        .max_context_len(2048)
        .max_new_tokens(64)
        .top_k(1)
        .top_p(1.0)
        .temperature(0.0)
        .repeat_penalty(1.0)
        .frequency_penalty(-2.0)
        .presence_penalty(2.0)
        .mirostat(rkllm::Mirostat::V1 { tau: 5.0, eta: 0.1 })
        .skip_special_token(false)
        .img_start("<img>")
        .img_end("</img>")
        .img_content("<unk>")
        .base_domain_id(1)
        .build()
        .unwrap();
    assert_eq!(ok.max_context_len(), 2048);
}

#[test]
fn a_context_above_the_model_limit_is_refused_by_the_runtime() {
    let path = MockModel::new()
        .max_context_limit(1024)
        .write_temp_file()
        .unwrap();
    let err = Model::builder(&path)
        .runtime(Runtime::mock())
        .max_context_len(2048)
        .build()
        .unwrap_err();
    assert!(matches!(err, Error::Init(_)), "{err:?}");
}

#[test]
fn init_failures_are_typed_with_a_diagnosis() {
    let path = MockModel::new()
        .fail_init(InitFailure::NpuOutOfMemory {
            requested_bytes: 232_128_512,
        })
        .write_temp_file()
        .unwrap();
    let err = Model::builder(&path)
        .runtime(Runtime::mock())
        .build()
        .unwrap_err();
    let Error::Init(init) = &err else {
        panic!("expected Init, got {err:?}")
    };
    assert_eq!(init.diagnosis().cause().as_str(), "npu_out_of_memory");
    assert_eq!(init.diagnosis().requested_bytes(), Some(232_128_512));
    assert!(err.to_string().contains("w8a8"), "{err}");

    let path = MockModel::new()
        .fail_init(InitFailure::NullHandle)
        .write_temp_file()
        .unwrap();
    let err = Model::builder(&path)
        .runtime(Runtime::mock())
        .build()
        .unwrap_err();
    let Error::Init(init) = &err else {
        panic!("expected Init, got {err:?}")
    };
    assert_eq!(init.code(), None);
}

#[test]
fn a_missing_model_file_fails_before_init() {
    let err = Model::builder("/nonexistent/model.rkllm")
        .runtime(Runtime::mock())
        .build()
        .unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err:?}");
    assert!(
        err.to_string().contains("/nonexistent/model.rkllm"),
        "{err}"
    );
}

#[test]
fn runtime_info_comes_from_the_version_line() {
    let model = common::load(&MockModel::new().driver_version("0.9.8"));
    let init = model.init_diagnosis();
    assert_eq!(
        init.runtime_version(),
        Some("1.1.1"),
        "the version line was captured"
    );
    assert_eq!(init.driver_version(), Some("0.9.8"));
    assert_eq!(init.platform(), Some("RK3588"));
}

#[test]
fn handle_calls_during_a_run_report_run_in_progress_instead_of_racing_it() {
    let model = common::load(
        &MockModel::new()
            .answer("a long enough answer to still be running")
            .decode_seconds_per_token(0.005),
    );
    let adapter_file = common::temp_file("busy.rkllm", b"lora");
    let mut session = model.session().unwrap();
    let mut stream = session.generate("q", &GenerateOptions::new()).unwrap();
    stream.next().unwrap().unwrap();
    let err = model.load_lora(&adapter_file, "busy", 1.0).unwrap_err();
    assert!(matches!(err, Error::RunInProgress), "{err:?}");
    assert!(err.to_string().contains("run is in progress"), "{err}");
    drop(stream);
    assert!(
        model.load_lora(&adapter_file, "busy", 1.0).is_ok(),
        "free again after the run"
    );
}
