"""Pre-train, fine-tune or evaluate NESTOR.

deepspeed --num_gpus 2 launch/train.py --ds_config ds_configs/cpu_fp32.json --config configs/tiny_cpu.yaml
torchrun --nproc_per_node 2 launch/train.py --ds_config ... --config ...
python launch/train.py --ds_config ... --config ... --set parallel.ep_size=1
"""

import sys

from nestor_ds.cli import train_main

if __name__ == "__main__":
    sys.exit(train_main())
