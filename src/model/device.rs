//! Choosing where tensors live. The rest of the code sees a `candle_core::Device` and never a cargo feature:
//! without the `cuda` feature, candle's CUDA constructor returns an error, which we turn into a clear message.

use candle_core::Device;
use serde::{Deserialize, Serialize};

use super::error::{ModelError, Result};

/// The device a user asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum DeviceChoice {
    /// The first CUDA GPU when the build has CUDA and one is present, else the CPU.
    #[default]
    Auto,
    /// Always the CPU.
    Cpu,
    /// The first CUDA GPU; an error when the build or the machine has none.
    Cuda,
}

impl DeviceChoice {
    /// Opens the chosen device.
    pub fn open(self) -> Result<Device> {
        match self {
            DeviceChoice::Cpu => Ok(Device::Cpu),
            DeviceChoice::Auto => Ok(Device::cuda_if_available(0).unwrap_or(Device::Cpu)),
            DeviceChoice::Cuda => Device::new_cuda(0).map_err(|e| {
                ModelError::Device(format!(
                    "CUDA requested but unavailable ({e}); build with `--features cuda` on a machine with an NVIDIA GPU, or use --device cpu"
                ))
            }),
        }
    }
}
