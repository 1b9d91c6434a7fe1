//! Microcontrollers Perch knows the memory of, and the budget check against them.

/// A part: flash and RAM usable by the application, in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Chip {
    pub name: &'static str,
    pub core: &'static str,
    pub flash: u64,
    pub ram: u64,
}

const K: u64 = 1024;

/// RAM is the contiguous SRAM an application links into by default (not CCM, not the extra banks).
pub const CHIPS: &[Chip] = &[
    Chip {
        name: "stm32f411",
        core: "Cortex-M4F",
        flash: 512 * K,
        ram: 128 * K,
    },
    Chip {
        name: "stm32f405",
        core: "Cortex-M4F",
        flash: 1024 * K,
        ram: 128 * K,
    },
    Chip {
        name: "nrf52840",
        core: "Cortex-M4F",
        flash: 1024 * K,
        ram: 256 * K,
    },
    Chip {
        name: "stm32h743",
        core: "Cortex-M7",
        flash: 2048 * K,
        ram: 512 * K,
    },
    Chip {
        name: "rp2040",
        core: "Cortex-M0+",
        flash: 2048 * K,
        ram: 264 * K,
    },
];

pub fn find(name: &str) -> Option<Chip> {
    let wanted = name.to_ascii_lowercase();
    CHIPS.iter().copied().find(|c| wanted.starts_with(c.name))
}

/// Parses `512K`, `1M`, `131072`.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let (digits, unit) = match t.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => t.split_at(i),
        None => (t, ""),
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("`{text}` is not a size such as 512K, 1M or 131072"))?;
    let mult = match unit.to_ascii_uppercase().as_str() {
        "" | "B" => 1,
        "K" | "KB" | "KIB" => K,
        "M" | "MB" | "MIB" => K * K,
        _ => return Err(format!("`{text}`: unknown unit (use K or M)")),
    };
    n.checked_mul(mult)
        .filter(|&v| v > 0)
        .ok_or_else(|| format!("`{text}` is not a usable size"))
}

pub fn names() -> String {
    CHIPS
        .iter()
        .map(|c| {
            format!(
                "{} ({}, {} KiB flash, {} KiB RAM)",
                c.name,
                c.core,
                c.flash / K,
                c.ram / K
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_names() {
        assert_eq!(parse_size("512K"), Ok(512 * 1024));
        assert_eq!(parse_size("1M"), Ok(1 << 20));
        assert_eq!(parse_size("131072"), Ok(131072));
        assert!(parse_size("12Q").is_err() && parse_size("0").is_err() && parse_size("K").is_err());
        assert_eq!(find("STM32F411RETx").unwrap().ram, 128 * 1024);
        assert!(find("esp32").is_none());
    }
}
