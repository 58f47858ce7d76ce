"""Part 4: reasoning with transformers, on one generated task with exactly checkable steps.

Modules, in the order the chapters use them:

* ``task`` — the problem family (chains of digit operations mod 10), gold traces with self-checks, the
  exact checker, chance levels, the fixed held-out split;
* ``tokenizer`` — one token per character of the task (plus ``<answer>`` and ``wait``);
* ``data`` — training examples as ids, loss on the solution only;
* ``models`` — the chain-of-thought model and its direct-answer twin (the course's GPT), trained and cached;
* ``sampling`` — batched sampling with the KV-cache, stop tokens and a logits hook;
* ``evaluate`` — solving problems, accuracy by level, cost;
* ``voting`` — majority vote, reranking, pass@k;
* ``reward`` — process and outcome reward models, AUC;
* ``search`` — PRM-guided beam search and Monte-Carlo tree search;
* ``budget`` — budget forcing (truncation, ``wait`` extension);
* ``grpo`` — group relative policy optimisation;
* ``distill`` — students trained on a teacher's traces or logits;
* ``pipeline`` — the part's runs, each cached, shared by the chapters and the final table.
"""
