"""loramux.trainer: turns a tenant's data into a checked, registered adapter.

Public API (cli.py, the `loramux trainer` group and the `trainer` command, is a thin layer over it):
- config.load_config(yaml, overrides) -> TrainConfig; recipes in trainer/recipes/ (lora, qlora, full)
- data.load_splits(train, eval, eval_fraction=, seed=) -> Splits; DataError lists every bad row
- train.train(config, resume=False) -> TrainResult (adapter/ or model/, metrics.json, loss.png)
- tenant.add_tenant(config, tenant=, name=, store=, gate=Gate(), server=) -> AddTenantResult;
  GateFailed when the adapter does not beat the base (nothing is published)
- merge.merge(adapter_ref_or_dir, out, base=, store=) -> merged model folder
- plan.make_plan(base_or_config, gpu_mem=, examples=, seq_len=) -> Plan
- compare.compare(config, methods) -> rows; demo.train_demo_tenants(base, store, work_dir, base_id=)
- tiny_base.build_tiny(out, seed=) -> the offline tiny Llama base (`loramux base build-tiny`)
- bases.get_base(name, out, dtype=) -> a known base (BASES: tiny, smollm2) (`loramux base get`)
- gguf_import.import_gguf(file, out, dtype=) -> a GGUF as a model folder (`loramux base import`);
  gguf_tokenizer.ensure_parity checks its tokenizer against the GGUF's own rules

Only this package imports trl and bitsandbytes, lazily; it never imports loramux.server.
"""
