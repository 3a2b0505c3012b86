"""Models for bench/gpu_check.sh from configs with the real tokenizers: 6 x 512 on a GPU, 2 x 32 on a CPU."""

import sys
from pathlib import Path

import torch
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    BertTokenizer,
    GPT2Config,
    GPT2LMHeadModel,
    GPT2Tokenizer,
    T5Config,
    T5ForConditionalGeneration,
    T5Tokenizer,
)


def main(data: Path, out: Path) -> None:
    layers, width = (6, 512) if torch.cuda.is_available() else (2, 32)
    tokenizers = data / "tokenizers"
    torch.manual_seed(0)
    save(
        GPT2LMHeadModel(GPT2Config(n_embd=width, n_layer=layers, n_head=8 if width > 64 else 2, vocab_size=50257)),
        GPT2Tokenizer.from_pretrained(tokenizers / "gpt2"),
        out / "gpt2",
    )
    bert = BertTokenizer.from_pretrained(tokenizers / "bert-base-uncased")
    config = BertConfig(vocab_size=len(bert), hidden_size=width, num_hidden_layers=layers, intermediate_size=2 * width)
    config.num_attention_heads, config.num_labels = (8 if width > 64 else 2), 2
    save(BertForSequenceClassification(config), bert, out / "bert")
    t5 = T5Tokenizer.from_pretrained(tokenizers / "t5-small")
    config = T5Config(d_model=width, d_ff=2 * width, num_layers=layers, num_heads=8 if width > 64 else 2, d_kv=16)
    config.update({"vocab_size": len(t5), "decoder_start_token_id": 0, "n_positions": 512})
    save(T5ForConditionalGeneration(config), t5, out / "t5")


def save(model, tokenizer, path: Path) -> None:
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
