"""Part 3: fine-tuning Part 2's GPT. Instruction tasks and their judges (``tasks``), the chat format with its
special tokens (``chat``), supervised fine-tuning (``sft``), LoRA (``lora``), sampling and log-probabilities
(``generation``), measurements (``evaluate``), reward models (``reward``), PPO (``ppo``), DPO (``dpo``), and every
trained model of the part, cached (``recipes``)."""
