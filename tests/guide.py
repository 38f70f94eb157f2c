"""The launch guide's values as test data (docs/reference/launch-guide.md), shared by the profile and
launch tests."""

# The guide's exports with fixed values (the PYTHON_* / torch paths depend on the machine's Python).
GUIDE_ENV = {
    "PYTORCH_NPU_INSTALL_PATH": "/usr/local/libtorch_npu/",
    "ASDOPS_LOG_LEVEL": "ERROR",
    "ASDOPS_LOG_TO_STDOUT": "1",
    "ASDOPS_LOG_TO_FILE": "1",
    "PYTORCH_NPU_ALLOC_CONF": "expandable_segments:True",
    "NPU_MEMORY_FRACTION": "0.96",
    "ATB_WORKSPACE_MEM_ALLOC_ALG_TYPE": "3",
    "ATB_WORKSPACE_MEM_ALLOC_GLOBAL": "1",
    "OMP_NUM_THREADS": "12",
    "ALLOW_INTERNAL_FORMAT": "1",
    "ATB_LAYER_INTERNAL_TENSOR_REUSE": "1",
    "ATB_LLM_ENABLE_AUTO_TRANSPOSE": "0",
    "ATB_CONVERT_NCHW_TO_AND": "1",
    "ATB_LAUNCH_KERNEL_WITH_TILING": "1",
    "ATB_OPERATION_EXECUTE_ASYNC": "2",
    "ATB_CONTEXT_WORKSPACE_SIZE": "0",
    "INF_NAN_MODE_ENABLE": "1",
    "HCCL_EXEC_TIMEOUT": "0",
    "HCCL_CONNECT_TIMEOUT": "7200",
    "HCCL_OP_EXPANSION_MODE": "AIV",
    "HCCL_IF_BASE_PORT": "2864",
}
