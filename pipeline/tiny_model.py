"""A tiny random-init Qwen2 model with a real (trained) byte-level BPE tokenizer.

It exists so that tests and the smoke DAG exercise every real code path (chat template,
``from_pretrained``, vLLM, LoRA) in seconds. Its outputs are noise until trained.
"""

from __future__ import annotations

from pathlib import Path

from pipeline.config import ModelSpec
from pipeline.tasks.arith import ArithSettings, generate_problems
from pipeline.tasks.solver_format import render_solution, solver_user_message

# vLLM's CPU attention backend only supports these head sizes.
VLLM_CPU_HEAD_SIZES = (32, 64, 80, 96, 112, 128, 160, 192, 224, 256, 512)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def tokenizer_corpus(seed: int, n: int = 2000) -> list[str]:
    """Task-shaped text: prompts, step-tagged solutions and prose references."""
    corpus = []
    for p in generate_problems(n, seed=f"tiny-corpus-{seed}", settings=ArithSettings(max_steps=5)):
        steps = [f"{s.a} {s.op} {s.b} = {s.result}" for s in p.steps]
        corpus += [solver_user_message(p.question), render_solution(steps, str(p.answer)), p.reference]
    return corpus


def build_tiny_model(out_dir: Path, spec: ModelSpec) -> dict:
    """Train the tokenizer, init the model from ``spec.seed`` and save both to ``out_dir``."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    head_size = spec.hidden_size // spec.num_heads
    if head_size not in VLLM_CPU_HEAD_SIZES:
        raise ValueError(
            f"tiny model head size {head_size} is not one vLLM's CPU attention accepts: {VLLM_CPU_HEAD_SIZES}"
        )

    bpe = Tokenizer(models.BPE(unk_token=None))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=spec.vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        min_frequency=2,
        show_progress=False,
    )
    bpe.train_from_iterator(tokenizer_corpus(spec.seed), trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        model_max_length=4096,
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.save_pretrained(out_dir)

    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=spec.hidden_size,
        intermediate_size=3 * spec.hidden_size,
        num_hidden_layers=spec.num_layers,
        num_attention_heads=spec.num_heads,
        num_key_value_heads=spec.num_kv_heads,
        max_position_embeddings=4096,
        tie_word_embeddings=True,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None,
    )
    torch.manual_seed(spec.seed)
    model = Qwen2ForCausalLM(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.save_pretrained(out_dir)
    return {"num_parameters": sum(p.numel() for p in model.parameters())}
