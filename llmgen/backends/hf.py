"""The transformers backend: batched ``generate`` and batched forward passes for scoring.

Prompts are sorted by length and left-padded so each batch wastes little padding and every
sequence's last real token sits at the same position, which is what ``generate`` expects.
Logprobs are the raw model logprobs (``output_logits``), not the temperature-warped ones, to match
what vLLM reports.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from llmgen.backends.base import Backend, Completion, LoglikelihoodResult, SamplingConfig, truncate_at_stop
from llmgen.models import load_model


class HFBackend(Backend):
    name = "hf"

    def __init__(self, model: str, adapter: str | None = None, dtype: str = "float32", device: str | None = None,
                 batch_size: int = 16, model_obj=None, tokenizer_obj=None) -> None:
        """``model_obj``/``tokenizer_obj`` let a recipe score a model it holds in memory."""
        if model_obj is None:
            super().__init__(model, adapter, dtype)
            self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
            self.model, self._tok = load_model(self.model_path, dtype=dtype, device=self.device, adapter=adapter)
        else:
            self.model_name = self.model_path = model
            self.adapter, self.dtype = adapter, dtype
            self.fingerprint = f"in-memory-{id(model_obj)}"
            self.model, self._tok = model_obj, tokenizer_obj
            self.device = next(model_obj.parameters()).device
        if self._tok.pad_token is None:
            self._tok.pad_token = self._tok.eos_token
        self.batch_size = batch_size

    @property
    def tokenizer(self):
        return self._tok

    # --- generation -----------------------------------------------------------------------------
    @torch.no_grad()
    def generate(self, prompts: Sequence[str], sampling: SamplingConfig) -> list[list[Completion]]:
        tok = self._tok
        encoded = [tok(p, add_special_tokens=False)["input_ids"] for p in prompts]
        order = sorted(range(len(prompts)), key=lambda i: len(encoded[i]))
        results: list[list[Completion] | None] = [None] * len(prompts)
        eos_ids = self._eos_ids()
        for start in range(0, len(order), self.batch_size):
            idx = order[start : start + self.batch_size]
            batch = [encoded[i] for i in idx]
            width = max(len(b) for b in batch)
            input_ids = torch.full((len(batch), width), tok.pad_token_id, dtype=torch.long)
            attention = torch.zeros((len(batch), width), dtype=torch.long)
            for row, ids in enumerate(batch):
                input_ids[row, width - len(ids):] = torch.tensor(ids)
                attention[row, width - len(ids):] = 1
            if sampling.seed is not None:
                torch.manual_seed(sampling.seed + start)
            kwargs = dict(max_new_tokens=sampling.max_tokens, num_return_sequences=sampling.n,
                          return_dict_in_generate=True, output_logits=True, pad_token_id=tok.pad_token_id,
                          eos_token_id=eos_ids)
            if sampling.greedy:
                kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
            else:
                kwargs.update(do_sample=True, temperature=sampling.temperature, top_p=sampling.top_p, top_k=0)
            if sampling.stop:
                kwargs.update(stop_strings=list(sampling.stop), tokenizer=tok)
            out = self.model.generate(input_ids=input_ids.to(self.device), attention_mask=attention.to(self.device), **kwargs)
            new = out.sequences[:, width:].cpu()
            logps = torch.stack(out.logits, dim=1).float().log_softmax(-1).cpu()  # [B*n, T, V]
            for row, i in enumerate(idx):
                comps = []
                for j in range(sampling.n):
                    r = row * sampling.n + j
                    comps.append(self._completion(new[r], logps[r], sampling, eos_ids))
                results[i] = comps
        return results  # type: ignore[return-value]

    def _eos_ids(self) -> list[int]:
        ids = {self._tok.eos_token_id}
        gen_eos = getattr(getattr(self.model, "generation_config", None), "eos_token_id", None)
        if isinstance(gen_eos, int):
            ids.add(gen_eos)
        elif gen_eos:
            ids.update(gen_eos)
        return sorted(i for i in ids if i is not None)

    def _completion(self, tokens: torch.Tensor, logps: torch.Tensor, sampling: SamplingConfig, eos_ids) -> Completion:
        ids: list[int] = []
        lps: list[float] = []
        finish = "length"
        for t, token in enumerate(tokens.tolist()):
            ids.append(token)
            lps.append(float(logps[t, token]))
            if token in eos_ids:
                finish = "stop"
                break
        text_ids = ids[:-1] if finish == "stop" else ids
        text = self._tok.decode(text_ids, skip_special_tokens=True)
        text, hit = truncate_at_stop(text, sampling.stop)
        if hit:
            finish = "stop"
        return Completion(text=text, token_ids=ids, logprobs=lps, finish_reason=finish)

    # --- scoring --------------------------------------------------------------------------------
    @torch.no_grad()
    def loglikelihood_tokens(self, requests: Sequence[tuple[list[int], list[int]]]) -> list[LoglikelihoodResult]:
        seqs = [list(c) + list(x) for c, x in requests]
        order = sorted(range(len(seqs)), key=lambda i: -len(seqs[i]))
        results: list[LoglikelihoodResult | None] = [None] * len(seqs)
        pad = self._tok.pad_token_id
        for start in range(0, len(order), self.batch_size):
            idx = order[start : start + self.batch_size]
            width = max(len(seqs[i]) for i in idx)
            input_ids = torch.full((len(idx), width), pad, dtype=torch.long)
            attention = torch.zeros((len(idx), width), dtype=torch.long)
            for row, i in enumerate(idx):
                input_ids[row, : len(seqs[i])] = torch.tensor(seqs[i])
                attention[row, : len(seqs[i])] = 1
            logits = self.model(input_ids=input_ids.to(self.device), attention_mask=attention.to(self.device)).logits
            logps = logits.float().log_softmax(-1).cpu()
            for row, i in enumerate(idx):
                ctx, cont = requests[i]
                pos = torch.arange(len(ctx) - 1, len(ctx) + len(cont) - 1)
                target = torch.tensor(cont)
                token_lps = logps[row, pos, target]
                greedy = bool((logps[row, pos].argmax(-1) == target).all())
                results[i] = LoglikelihoodResult(float(token_lps.sum()), len(cont), greedy, token_lps.tolist())
        return results  # type: ignore[return-value]

    def close(self) -> None:
        self.model = None
