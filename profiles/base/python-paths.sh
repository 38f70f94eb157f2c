# Sourced once by xllm-tui (see `source:` in glm45-a3.yaml); its resulting environment is captured.
# The launch guide exports these from python's sysconfig and torch's install directory.
PYTHON_INCLUDE_PATH="$(python3 -c 'import sysconfig; print(sysconfig.get_paths()["include"])' 2>/dev/null)"
export PYTHON_INCLUDE_PATH
export PYTHON_LIB_PATH="$PYTHON_INCLUDE_PATH"
xllm_tui_torch_dir="$(python3 -c 'import os, torch; print(os.path.dirname(os.path.abspath(torch.__file__)))' 2>/dev/null)"
if [ -n "$xllm_tui_torch_dir" ]; then
  export PYTORCH_INSTALL_PATH="$xllm_tui_torch_dir"
  export LIBTORCH_ROOT="$xllm_tui_torch_dir"
fi
unset xllm_tui_torch_dir
