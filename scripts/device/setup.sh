# Source me on the device machine: installs the carried wheels (.whl/) into /tmp/site.
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || return 1
export PYTHONPATH=/tmp/site:$PWD PATH=/tmp/site/bin:$PATH PYTHONUNBUFFERED=1
lltrace() { python3 -m lltrace "$@"; }
python3 -c "import torch, torchao, textual; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'cudnn', torch.backends.cudnn.version(), torch.cuda.get_device_name(), 'torchao', torchao.__version__)"
# flash-attn-4 (attention: flash4), when scripts/device/fetch_fa4.sh's chunks were carried.
if [ -d .fa4 ] || [ -d .fa4-site ]; then . scripts/device/fa4_env.sh; fi
