"""Build a tiny, randomly initialised LlamaForCausalLM folder, entirely offline.

Why: the vLLM engine path needs a real decoder model to serve in tests and dev, and there is no model hub
on these machines. The tokenizer is a real byte-level BPE trained on a real offline corpus (Debian's
fortune files, or this interpreter's own standard library when those are absent); the weights are random
(seeded), so the output text is noise but every serving mechanism - tokenization, chat templates,
prefix caching, priority scheduling, streaming, usage accounting - is exercised for real.

Works with transformers 4.57 (`.venv`) and 5.x (`.venv-vllm`).
    python -m model_builds.tiny_llama --out build/tiny-llama
"""

from __future__ import annotations

import json
import sysconfig
from dataclasses import asdict, dataclass
from pathlib import Path

import typer

FORTUNES_DIR = Path("/usr/share/games/fortunes")
BOS, EOS, PAD = "<|bos|>", "<|eos|>", "<|pad|>"
# Roles are plain text; the assistant turn ends with EOS so generation stops where a reply would.
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "<|{{ message['role'] }}|>\n{{ message['content'] }}{{ eos_token }}\n"
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


class TinyLlamaError(ValueError):
    """The corpus or the requested shape cannot produce a model; the message names the value."""


@dataclass(frozen=True)
class TinyLlamaSpec:
    """Shape of the tiny model. head_dim = hidden/heads = 32: vLLM's CPU attention needs head_dim >= 32."""

    vocab_size: int = 2048
    hidden_size: int = 64
    intermediate_size: int = 256
    num_hidden_layers: int = 2
    num_attention_heads: int = 2
    num_key_value_heads: int = 2
    max_position_embeddings: int = 512
    seed: int = 1234
    max_corpus_chars: int = 3_000_000

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_attention_heads:
            raise TinyLlamaError(
                f"hidden_size {self.hidden_size} is not divisible by num_attention_heads {self.num_attention_heads}"
            )
        if self.num_attention_heads % self.num_key_value_heads:
            raise TinyLlamaError(
                f"num_attention_heads {self.num_attention_heads} is not a multiple of "
                f"num_key_value_heads {self.num_key_value_heads}"
            )


def corpus_files(corpus: Path | None) -> list[Path]:
    """Text files of the corpus, sorted so the tokenizer is reproducible.

    None picks Debian's fortunes (their `.dat` index and `.u8` duplicates are skipped) or, where that
    package is not installed (e.g. inside an image), the running interpreter's standard library sources.
    """
    if corpus is None:
        corpus = FORTUNES_DIR if FORTUNES_DIR.is_dir() else Path(sysconfig.get_paths()["stdlib"])
    if corpus.is_file():
        return [corpus]
    if not corpus.is_dir():
        raise TinyLlamaError(f"corpus {corpus} is neither a file nor a folder")
    files = sorted(
        path
        for path in corpus.rglob("*")
        if path.is_file()
        and path.suffix in ("", ".py", ".txt", ".rst")
        and not {"test", "off"} & set(path.relative_to(corpus).parts)  # stdlib tests; fortunes' offensive set
    )
    if not files:
        raise TinyLlamaError(f"corpus {corpus} holds no text files (no suffix, .py, .txt or .rst)")
    return files


def read_corpus(files: list[Path], max_chars: int) -> list[str]:
    """Up to max_chars of text, one string per file (undecodable bytes replaced, not fatal)."""
    texts: list[str] = []
    total = 0
    for path in files:
        text = path.read_text(encoding="utf-8", errors="replace")
        texts.append(text[: max_chars - total])
        total += len(texts[-1])
        if total >= max_chars:
            break
    if total < 1000:
        raise TinyLlamaError(f"corpus has only {total} characters; a BPE of a useful size needs more")
    return texts


def train_tokenizer(texts: list[str], vocab_size: int, max_length: int):  # -> PreTrainedTokenizerFast
    """Byte-level BPE (every byte is representable, so no unknown tokens) with BOS prepended."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[PAD, BOS, EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    bos_id = tokenizer.token_to_id(BOS)
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, bos_id)]
    )
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        model_max_length=max_length,
        model_input_names=["input_ids", "attention_mask"],  # a decoder has no token_type_ids
    )
    wrapped.chat_template = CHAT_TEMPLATE
    return wrapped


def build_tiny_llama(out: Path, spec: TinyLlamaSpec = TinyLlamaSpec(), corpus: Path | None = None) -> Path:
    """Write tokenizer + config + model.safetensors to `out`; returns `out`."""
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    files = corpus_files(corpus)
    texts = read_corpus(files, spec.max_corpus_chars)
    tokenizer = train_tokenizer(texts, spec.vocab_size, spec.max_position_embeddings)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.num_hidden_layers,
        num_attention_heads=spec.num_attention_heads,
        num_key_value_heads=spec.num_key_value_heads,
        max_position_embeddings=spec.max_position_embeddings,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    torch.manual_seed(spec.seed)
    model = LlamaForCausalLM(config).eval()
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)  # safetensors is the default in transformers 4.57 and 5.x
    tokenizer.save_pretrained(out)
    if not (out / "model.safetensors").is_file():
        raise TinyLlamaError(f"{out}: save_pretrained wrote no model.safetensors")
    build = {"spec": asdict(spec), "corpus_root": str(files[0].parent), "corpus_files": len(files)}
    (out / "infopt_build.json").write_text(json.dumps(build, indent=2) + "\n")
    return out


def main(
    out: Path = typer.Option(..., help="folder to write the model into"),
    corpus: Path = typer.Option(None, help="text file or folder; default: Debian fortunes, else the stdlib"),
    vocab_size: int = typer.Option(TinyLlamaSpec.vocab_size, help="BPE vocabulary size"),
    seed: int = typer.Option(TinyLlamaSpec.seed, help="weight initialisation seed"),
) -> None:
    """Build the tiny Llama folder (tokenizer trained on a real corpus, random weights)."""
    build_tiny_llama(out, TinyLlamaSpec(vocab_size=vocab_size, seed=seed), corpus)
    typer.echo(str(out))


if __name__ == "__main__":
    typer.run(main)
