"""The transformers backend: a decode loop of its own and batched forward passes for scoring.

Generation does not use ``model.generate``: each sequence (each sample of each request) draws its
tokens from its own ``torch.Generator`` seeded from (seed, prompt), so a completion is the same
whatever batch it shares, and the loop computes only what is asked for: the logprob of the chosen
token (``log_softmax`` as vLLM computes it, only the chosen entry kept: ``logit - logsumexp`` loses
float32 digits on large logits, ~1e-5 in a greedy perplexity of SmolLM2), stop strings
checked on the last few decoded tokens, finished rows dropped from the batch and its KV cache.
Logprobs are the raw model logprobs, not the temperature-warped ones, to match what vLLM reports.
It honours every ``SamplingConfig`` option: ``ignore_eos`` keeps a row going past EOS,
``return_entropy`` adds the entropy of each step's full raw distribution (``evals.generation.
token_entropies``), and ``block_ngrams`` is a logits processor that sets a blocked token's score to
``-inf`` before the choice (logprob and entropy stay those of the raw model).

Scoring left-pads the (context + continuation minus its last token) inputs so every continuation
ends at the last position, and projects only the last ``max continuation`` positions to the
vocabulary (``logits_to_keep``): the prompt part never pays for a full-vocabulary softmax. Pairs
with the same input (choices differing only in their last token) share one forward pass.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from llmgen.backends.base import (
    Backend,
    Completion,
    GenerationRequest,
    LoglikelihoodResult,
    model_dtype,
    register_backend,
    truncate_at_stop,
)
from llmgen.evals.generation import token_entropies
from llmgen.models import load_model

_DEFAULT_MAX_LENGTH = 2048  # lm-eval's fallback when neither the config nor the tokenizer says


def content_fingerprint(model) -> str:
    """A hash of an in-memory model's weights (names, shapes, dtypes and bytes), for cache keys.

    Two processes holding the same weights get the same key; any changed weight gives another.
    sha256 over 135M fp32 parameters takes about a second, so ``HFBackend`` computes it only when a
    cache key needs it (``Backend.fingerprint``), once per backend.
    """
    import hashlib

    h = hashlib.sha256()
    for name, t in model.state_dict().items():
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
        h.update(t.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return "mem-" + h.hexdigest()[:16]


@register_backend("hf")
class HFBackend(Backend):
    GENERATION_OPTIONS = frozenset({"ignore_eos", "return_entropy", "block_ngrams"})
    LOCAL_WEIGHTS = True  # dtype, adapter folder and custom code are checked before the weights load

    def __init__(self, model: str, adapter: str | None = None, dtype: str = "float32", device: str | None = None,
                 batch_size: int = 16, model_obj=None, tokenizer_obj=None, max_length: int | None = None,
                 trust_remote_code: bool = False) -> None:
        """``model_obj``/``tokenizer_obj`` let a recipe score a model it holds in memory.

        ``max_length`` overrides the context length read from the model config (e.g. to match a
        vLLM engine started with a smaller ``max_model_len``).
        """
        if model_obj is None:
            super().__init__(model, adapter, dtype)
            self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
            self.model, self._tok = load_model(self.model_path, dtype=dtype, device=self.device, adapter=adapter,
                                               trust_remote_code=trust_remote_code)
        else:
            self.model_name = self.model_path = model
            self.adapter, self.dtype = adapter, dtype
            self.model, self._tok = model_obj, tokenizer_obj
            self.in_memory = True  # fingerprinted by content, lazily (_compute_fingerprint)
            self.device = next(model_obj.parameters()).device
        if self._tok.pad_token is None:
            self._tok.pad_token = self._tok.eos_token
        self.batch_size = batch_size
        self._max_length = max_length or self._context_length()

    @classmethod
    def from_model(cls, model, tokenizer, save_dir=None, dtype: str | None = None, label: str = "in-memory",
                   **kwargs) -> HFBackend:
        """The model object itself, scored where it lives (no copy, no folder: ``save_dir`` unused);
        ``label`` is its name in results."""
        return cls(label, model_obj=model, tokenizer_obj=tokenizer, dtype=dtype or model_dtype(model), **kwargs)

    def _compute_fingerprint(self) -> str:
        return content_fingerprint(self.model) if self.in_memory else super()._compute_fingerprint()

    @property
    def tokenizer(self):
        return self._tok

    @property
    def max_length(self) -> int:
        return self._max_length

    def _context_length(self) -> int:
        """The context length, looked up as lm-eval does: model config, then tokenizer, then 2048."""
        cfg = self.model.config
        for attr in ("n_positions", "max_position_embeddings", "n_ctx"):
            if getattr(cfg, attr, None):
                return int(getattr(cfg, attr))
        tok_max = getattr(self._tok, "model_max_length", None)
        if tok_max and tok_max < 1e9:
            return int(tok_max)
        return _DEFAULT_MAX_LENGTH

    # --- generation -----------------------------------------------------------------------------
    @torch.no_grad()
    def _generate_tokens(self, requests: Sequence[GenerationRequest]) -> list[list[Completion]]:
        order = sorted(range(len(requests)), key=lambda i: len(requests[i].token_ids))
        results: list[list[Completion] | None] = [None] * len(requests)
        for start in range(0, len(order), self.batch_size):
            idx = order[start : start + self.batch_size]
            rows = [(i, j) for i in idx for j in range(requests[i].sampling.n)]
            comps = self._decode([requests[i] for i, _ in rows], [j for _, j in rows])
            for i in idx:
                results[i] = []
            for (i, _), c in zip(rows, comps, strict=True):
                results[i].append(c)  # type: ignore[union-attr]
        return results  # type: ignore[return-value]

    MIN_SHARED_PREFIX = 16  # tokens; a shorter common prefix is not worth a separate forward pass

    def _prefill(self, seqs: Sequence[Sequence[int]], keep: int):
        """One forward pass over a batch of token sequences; logits of the last ``keep`` positions.

        The batch's common prefix (few-shot examples, a shared instruction) runs once and its KV
        cache is repeated for every row; each row's rest is left-padded after it, the padding masked
        and the positions continued, so the result equals a forward pass over each whole sequence.
        Returns (logits [B, keep, V], KV cache, attention mask, last position per row).
        """
        import os

        from transformers import DynamicCache

        dev, n = self.device, len(seqs)
        shared = len(os.path.commonprefix([list(x) for x in seqs])) if n > 1 else 0
        shared = min(shared, min(len(x) for x in seqs) - keep)
        if shared < self.MIN_SHARED_PREFIX:
            shared = 0
        cache = DynamicCache()
        if shared:
            self.model(input_ids=torch.tensor([list(seqs[0][:shared])], device=dev), past_key_values=cache,
                       use_cache=True, logits_to_keep=1)
            cache.batch_repeat_interleave(n)
        rest = [list(x[shared:]) for x in seqs]
        width = max(len(r) for r in rest)
        input_ids = torch.full((n, width), self._tok.pad_token_id, dtype=torch.long)
        mask = torch.zeros((n, width), dtype=torch.long)
        for row, r in enumerate(rest):
            input_ids[row, width - len(r):] = torch.tensor(r)
            mask[row, width - len(r):] = 1
        mask = mask.to(dev)
        positions = shared + (mask.cumsum(-1) - 1).clamp(min=0)
        attention = torch.cat([mask.new_ones((n, shared)), mask], dim=1)
        out = self.model(input_ids=input_ids.to(dev), attention_mask=attention, position_ids=positions,
                         past_key_values=cache, use_cache=True, logits_to_keep=keep)
        return out.logits[:, -keep:], cache, attention, positions[:, -1]

    def _decode(self, reqs: list[GenerationRequest], sample: list[int]) -> list[Completion]:
        """One batch of sequences decoded together; row ``r`` is sample ``sample[r]`` of ``reqs[r]``."""
        tok, dev = self._tok, self.device
        n = len(reqs)
        gens = []
        for r, j in zip(reqs, sample, strict=True):
            g = None
            if not r.sampling.greedy and r.seeds is not None:
                g = torch.Generator().manual_seed(r.seeds[j])
            gens.append(g)
        temps = torch.tensor([r.sampling.temperature for r in reqs], dtype=torch.float32, device=dev)
        top_ps = torch.tensor([r.sampling.top_p for r in reqs], dtype=torch.float32, device=dev)
        eos = torch.tensor(self._eos_ids(), device=dev)
        stop_window = [max((len(s) for s in r.sampling.stop), default=0) + 2 for r in reqs]

        logits, cache, attention, last_pos = self._prefill([r.token_ids for r in reqs], keep=1)
        logits = logits[:, -1, :].float()
        active = list(range(n))  # original row of each batch row
        ids: list[list[int]] = [[] for _ in range(n)]
        lps: list[list[float]] = [[] for _ in range(n)]
        ents: list[list[float] | None] = [[] if r.sampling.return_entropy else None for r in reqs]
        finish = ["length"] * n
        step = 0
        while active:
            rows = torch.tensor(active, device=dev)
            scores = self._block(logits, [(reqs[r], ids[r]) for r in active])
            chosen = self._choose(scores, temps[rows], top_ps[rows], [gens[r] for r in active])
            chosen_lp = logits.log_softmax(-1).gather(1, chosen[:, None])[:, 0].tolist()
            step_ent = (token_entropies(logits.cpu().numpy()).tolist()
                        if any(ents[r] is not None for r in active) else None)
            is_eos = torch.isin(chosen, eos).tolist()
            chosen_l = chosen.tolist()
            step += 1
            keep = []
            for b, r in enumerate(active):
                ids[r].append(chosen_l[b])
                lps[r].append(chosen_lp[b])
                if ents[r] is not None:
                    ents[r].append(step_ent[b])  # type: ignore[index]
                stop = reqs[r].sampling.stop
                if is_eos[b] and not reqs[r].sampling.ignore_eos:
                    finish[r] = "stop"
                elif stop and truncate_at_stop(tok.decode(ids[r][-stop_window[r]:]), stop)[1]:
                    finish[r] = "stop"
                elif step < reqs[r].sampling.max_tokens:
                    keep.append(b)
            if not keep:
                break
            if len(keep) < len(active):
                sel = torch.tensor(keep, device=dev)
                cache.batch_select_indices(sel)
                attention, last_pos, chosen = attention[sel], last_pos[sel], chosen[sel]
                active = [active[b] for b in keep]
            attention = torch.cat([attention, attention.new_ones((len(active), 1))], dim=1)
            last_pos = last_pos + 1
            out = self.model(input_ids=chosen[:, None], attention_mask=attention, position_ids=last_pos[:, None],
                             past_key_values=cache, use_cache=True)
            logits = out.logits[:, -1, :].float()
        comps = []
        for r, req in enumerate(reqs):
            ended = finish[r] == "stop" and ids[r] and ids[r][-1] in eos.tolist()
            text_ids = ids[r][:-1] if ended else ids[r]
            text, _ = truncate_at_stop(tok.decode(text_ids, skip_special_tokens=True), req.sampling.stop)
            comps.append(Completion(text=text, token_ids=ids[r], logprobs=lps[r], finish_reason=finish[r],
                                    truncated=req.truncated, entropies=ents[r]))
        return comps

    @staticmethod
    def _block(logits: torch.Tensor, rows: list[tuple[GenerationRequest, list[int]]]) -> torch.Tensor:
        """The scores the next token is chosen from: ``logits`` with the tokens each row's
        ``block_ngrams`` forbids after its prompt + continuation so far set to ``-inf``. ``logits``
        itself is left as it is: logprobs and entropies are the raw model's."""
        scores = logits
        for b, (req, new) in enumerate(rows):
            block = req.sampling.block_ngrams
            if block is None:
                continue
            k = block.n - 1  # the context an n-gram continues
            context = new[-k:] if len(new) >= k else req.token_ids[max(0, len(req.token_ids) - (k - len(new))):] + new
            ban = sorted(block.blocked(context))
            if ban:
                scores = logits.clone() if scores is logits else scores
                scores[b, ban] = float("-inf")
        return scores

    @staticmethod
    def _choose(logits: torch.Tensor, temps: torch.Tensor, top_ps: torch.Tensor, gens: list) -> torch.Tensor:
        """Next token per row: argmax where temperature is 0, else a draw from the row's generator.

        A draw is the exponential race vLLM's sampler uses: ``argmax(logits / T - log(E))`` with
        ``E ~ Exp(1)`` per vocabulary entry, from the row's own generator, over the top-p nucleus.
        Unlike inverse-CDF sampling, the winner does not move when the logits change by rounding
        noise (another batch shape), so a seeded sample is the same in any batch.
        """
        chosen = logits.argmax(-1)
        sampled = (temps > 0).nonzero()[:, 0]
        if len(sampled) == 0:
            return chosen
        scaled = logits[sampled] / temps[sampled, None]
        if bool((top_ps[sampled] < 1).any()):
            probs, order = torch.softmax(scaled, dim=-1).sort(dim=-1, descending=True)
            outside = (probs.cumsum(-1) - probs) >= top_ps[sampled, None]
            scaled = scaled.masked_fill(outside.scatter(1, order, outside), float("-inf"))
        vocab = scaled.shape[1]
        noise = torch.stack([torch.empty(vocab).exponential_(generator=gens[b]) for b in sampled.tolist()])
        chosen[sampled] = (scaled - noise.to(scaled.device).log()).argmax(-1)
        return chosen

    def _eos_ids(self) -> list[int]:
        ids = {self._tok.eos_token_id}
        gen_eos = getattr(getattr(self.model, "generation_config", None), "eos_token_id", None)
        if isinstance(gen_eos, int):
            ids.add(gen_eos)
        elif gen_eos:
            ids.update(gen_eos)
        return sorted(i for i in ids if i is not None)

    # --- scoring --------------------------------------------------------------------------------
    @torch.no_grad()
    def loglikelihood_tokens(self, requests: Sequence[tuple[list[int], list[int]]]) -> list[LoglikelihoodResult]:
        """Score pairs; requests whose model input is the same (choices that differ only in their last
        token, e.g. one-token answers to one question) share one forward pass."""
        inputs = [tuple((list(c) + list(x))[:-1]) for c, x in requests]
        users: dict[tuple[int, ...], list[int]] = {}
        for i, inp in enumerate(inputs):
            users.setdefault(inp, []).append(i)
        unique = sorted(users, key=lambda inp: -len(inp))
        results: list[LoglikelihoodResult | None] = [None] * len(inputs)
        for start in range(0, len(unique), self.batch_size):
            batch = unique[start : start + self.batch_size]
            keep = max(len(requests[i][1]) for inp in batch for i in users[inp])
            logits = self._prefill(batch, keep)[0]
            logps = logits.float().log_softmax(-1).cpu()
            for row, inp in enumerate(batch):
                for i in users[inp]:
                    cont = requests[i][1]
                    at = logps[row, keep - len(cont):]
                    target = torch.tensor(cont)
                    token_lps = at[torch.arange(len(cont)), target]
                    greedy = bool((at.argmax(-1) == target).all())
                    results[i] = LoglikelihoodResult(float(token_lps.sum()), len(cont), greedy, token_lps.tolist())
        return results  # type: ignore[return-value]

    def close(self) -> None:
        self.model = None
