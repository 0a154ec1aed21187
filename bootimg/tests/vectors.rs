//! Hand-built images of every version, negative vectors (one per way an
//! image can be malformed), and property tests: the parser never panics.

mod common;

use bootimg::{BOOTCONFIG_MAGIC, BootPayload, Error, ImageKind, parse_boot, parse_vendor_boot};
use common::{Sections, at, boot_v0_to_v2, boot_v3_v4, filler, put_u32, vendor_boot};
use proptest::prelude::*;

fn sample(version: u32, page: u32) -> Vec<u8> {
    let (kernel, ramdisk, second, dtb) = (
        filler(5000, 1),
        filler(3000, 2),
        filler(10, 3),
        filler(100, 4),
    );
    boot_v0_to_v2(
        version,
        page,
        &Sections {
            kernel: &kernel,
            ramdisk: &ramdisk,
            second: &second,
            dtb: &dtb,
            cmdline: "console=ttyAMA0 nokaslr",
        },
    )
}

#[test]
fn v0_to_v2_sections_and_cmdline() {
    for version in 0..=2 {
        for page in [2048, 4096, 16384] {
            let file = sample(version, page);
            let image = parse_boot(&file).unwrap_or_else(|e| panic!("v{version} page {page}: {e}"));
            assert_eq!(image.header_version, version);
            assert_eq!(image.page_size, page);
            assert_eq!(image.kernel, filler(5000, 1));
            assert_eq!(image.ramdisk, filler(3000, 2));
            assert_eq!(image.second, filler(10, 3));
            assert_eq!(
                image.dtb,
                if version == 2 { filler(100, 4) } else { vec![] }
            );
            assert_eq!(image.cmdline, "console=ttyAMA0 nokaslr");
            assert_eq!(image.board_name, "mvmm");
        }
    }
}

#[test]
fn a_long_cmdline_continues_in_extra_cmdline() {
    let long = format!("console=ttyAMA0 {}", "x".repeat(700));
    let file = boot_v0_to_v2(
        2,
        4096,
        &Sections {
            kernel: b"k",
            ramdisk: b"r",
            second: b"",
            dtb: b"",
            cmdline: &long,
        },
    );
    assert_eq!(parse_boot(&file).expect("parses").cmdline, long);
}

#[test]
fn v3_and_v4_with_vendor_boot() {
    let (kernel, generic) = (filler(9000, 5), filler(4000, 6));
    for version in [3, 4] {
        let boot_file = boot_v3_v4(version, &kernel, &generic, b"sig", "console=ttyAMA0");
        let boot = parse_boot(&boot_file).expect("boot parses");
        assert_eq!(
            (boot.page_size, boot.kernel, boot.ramdisk),
            (4096, &kernel[..], &generic[..])
        );
        assert_eq!(
            boot.signature,
            if version == 4 { &b"sig"[..] } else { &b""[..] }
        );
        let vendor_ramdisk = filler(2500, 7);
        let vendor_file = vendor_boot(
            version,
            2048,
            &[("platform", 1, &vendor_ramdisk)],
            b"dtb!",
            "androidboot.hardware=mvmm",
            b"",
        );
        let vendor = parse_vendor_boot(&vendor_file).expect("vendor parses");
        assert_eq!(vendor.vendor_ramdisk, &vendor_ramdisk[..]);
        assert_eq!(vendor.dtb, b"dtb!");
        let payload = BootPayload::assemble(&boot, Some(&vendor)).expect("assembles");
        assert_eq!(payload.kernel, kernel);
        assert_eq!(
            payload.initrd,
            [vendor_ramdisk.clone(), generic.clone()].concat(),
            "vendor ramdisk first"
        );
        assert_eq!(payload.cmdline, "console=ttyAMA0 androidboot.hardware=mvmm");
    }
}

#[test]
fn v4_leaves_recovery_ramdisks_out_and_appends_bootconfig() {
    let boot_file = boot_v3_v4(4, b"kernel", b"generic", b"", "console=ttyAMA0");
    let (platform, recovery, dlkm) = (filler(100, 1), filler(50, 2), filler(70, 3));
    let params = b"androidboot.hardware=mvmm\n";
    let vendor_file = vendor_boot(
        4,
        4096,
        &[
            ("platform", 1, &platform),
            ("recovery", 2, &recovery),
            ("dlkm", 3, &dlkm),
        ],
        b"",
        "",
        params,
    );
    let vendor = parse_vendor_boot(&vendor_file).expect("parses");
    assert_eq!(vendor.fragments.len(), 3);
    assert_eq!(vendor.fragments[1].name, "recovery");
    let boot = parse_boot(&boot_file).expect("parses");
    let payload = BootPayload::assemble(&boot, Some(&vendor)).expect("assembles");
    let sum: u32 = params.iter().map(|b| u32::from(*b)).sum();
    let mut expected = [&platform[..], &dlkm, b"generic", params].concat();
    expected.extend_from_slice(&(params.len() as u32).to_le_bytes());
    expected.extend_from_slice(&sum.to_le_bytes());
    expected.extend_from_slice(BOOTCONFIG_MAGIC);
    assert_eq!(payload.initrd, expected);
    assert_eq!(payload.cmdline, "console=ttyAMA0 bootconfig");
}

#[test]
fn a_v3_boot_image_alone_boots_its_generic_ramdisk() {
    let file = boot_v3_v4(3, b"kernel", b"generic", b"", "quiet");
    let payload =
        BootPayload::assemble(&parse_boot(&file).expect("parses"), None).expect("assembles");
    assert_eq!(
        (payload.initrd.as_slice(), payload.cmdline.as_str()),
        (&b"generic"[..], "quiet")
    );
}

// Negative vectors: each names what is wrong.

fn boot_error(file: &[u8]) -> String {
    parse_boot(file).expect_err("must be refused").to_string()
}

#[test]
fn empty_and_truncated_files() {
    assert_eq!(
        boot_error(b""),
        "boot image truncated: its header needs 1632 bytes, the file has 0"
    );
    let file = sample(2, 4096);
    assert_eq!(
        boot_error(&file[..1000]),
        "boot image truncated: its header needs 1660 bytes, the file has 1000"
    );
    assert_eq!(
        boot_error(&file[..30]),
        "boot image truncated: its header needs 1632 bytes, the file has 30"
    );
    let vendor = vendor_boot(3, 2048, &[("", 0, b"r")], b"", "", b"");
    assert_eq!(
        parse_vendor_boot(&vendor[..2000])
            .expect_err("refused")
            .to_string(),
        "vendor_boot image truncated: its header needs 2112 bytes, the file has 2000"
    );
}

#[test]
fn bad_magic() {
    let mut file = sample(0, 2048);
    file[..8].copy_from_slice(b"ANDROID?");
    assert_eq!(
        boot_error(&file),
        "not a boot image: magic is \"ANDROID?\", expected \"ANDROID!\""
    );
    assert!(matches!(
        parse_vendor_boot(&sample(0, 2048)),
        Err(Error::BadMagic {
            kind: ImageKind::VendorBoot,
            ..
        })
    ));
}

#[test]
fn unknown_version() {
    let mut file = sample(2, 4096);
    put_u32(&mut file, at::VERSION, 5);
    assert_eq!(
        boot_error(&file),
        "boot image header version 5 is not supported (known: 0 to 4)"
    );
    let mut vendor = vendor_boot(3, 2048, &[("", 0, b"r")], b"", "", b"");
    put_u32(&mut vendor, 8, 2);
    assert_eq!(
        parse_vendor_boot(&vendor).expect_err("refused").to_string(),
        "vendor_boot image header version 2 is not supported (known: 3 and 4)"
    );
}

#[test]
fn page_size_not_a_power_of_two_or_out_of_range() {
    for bad in [0, 1, 1024, 3000, 4095, 131072, u32::MAX] {
        let mut file = sample(0, 4096);
        put_u32(&mut file, at::PAGE_SIZE_V0, bad);
        assert_eq!(
            boot_error(&file),
            format!("boot image page size {bad} is not a power of two between 2048 and 65536")
        );
        let mut vendor = vendor_boot(3, 4096, &[("", 0, b"r")], b"", "", b"");
        put_u32(&mut vendor, at::VENDOR_PAGE_SIZE, bad);
        assert!(matches!(
            parse_vendor_boot(&vendor),
            Err(Error::BadPageSize { page_size, .. }) if page_size == bad
        ));
    }
}

#[test]
fn sections_past_the_end() {
    let mut file = sample(1, 2048);
    put_u32(&mut file, at::KERNEL_SIZE, 1 << 30);
    assert_eq!(
        boot_error(&file),
        format!(
            "boot image: kernel (1073741824 bytes at offset 2048) runs past the end of the file ({} bytes)",
            file.len()
        )
    );
    let mut file = sample(0, 2048);
    put_u32(&mut file, at::RAMDISK_SIZE_V0, u32::MAX);
    assert!(
        matches!(parse_boot(&file), Err(Error::SectionPastEnd { section: "ramdisk", size, .. }) if size == u64::from(u32::MAX))
    );
    // A file cut inside the ramdisk.
    let file = sample(2, 2048);
    assert!(matches!(
        parse_boot(&file[..2048 + 6144 + 100]),
        Err(Error::SectionPastEnd {
            section: "ramdisk",
            ..
        })
    ));
    let mut vendor = vendor_boot(3, 2048, &[("", 0, b"r")], b"", "", b"");
    put_u32(&mut vendor, at::VENDOR_RAMDISK_SIZE, 1 << 20);
    assert!(matches!(
        parse_vendor_boot(&vendor),
        Err(Error::SectionPastEnd {
            section: "vendor ramdisk",
            ..
        })
    ));
}

#[test]
fn header_size_disagreeing_with_the_version() {
    let mut file = sample(1, 2048);
    put_u32(&mut file, at::HEADER_SIZE_V1, 2049);
    assert_eq!(
        boot_error(&file),
        "boot image header v1 declares header_size 2049, more than its header pages (2048 bytes)"
    );
    // Android 10's mkbootimg wrote 1596 for v3: accepted.
    let mut file = boot_v3_v4(3, b"k", b"r", b"", "");
    put_u32(&mut file, at::HEADER_SIZE_V3, 1596);
    assert!(parse_boot(&file).is_ok());
    put_u32(&mut file, at::HEADER_SIZE_V3, 5000);
    assert!(matches!(
        parse_boot(&file),
        Err(Error::BadHeaderSize {
            declared: 5000,
            max: 4096,
            ..
        })
    ));
}

#[test]
fn a_cmdline_that_is_not_text() {
    let mut file = sample(0, 2048);
    file[64] = 0xff;
    assert_eq!(boot_error(&file), "boot image: cmdline is not UTF-8 text");
}

#[test]
fn a_ramdisk_table_pointing_outside_the_section() {
    let mut vendor = vendor_boot(4, 4096, &[("platform", 1, &filler(100, 1))], b"", "", b"");
    // The table follows the header page, the ramdisk page and the (empty) DTB.
    let table = 4096 * 2;
    put_u32(&mut vendor, table + 4, 50); // offset 50 + size 100 > 100
    assert_eq!(
        parse_vendor_boot(&vendor).expect_err("refused").to_string(),
        "vendor_boot ramdisk table entry 0: ramdisk \"platform\" (100 bytes at offset 50) lies outside the vendor ramdisk section (100 bytes)"
    );
    let mut vendor = vendor_boot(4, 4096, &[("platform", 1, &filler(100, 1))], b"", "", b"");
    put_u32(&mut vendor, 2112 + 4, 1000); // entry count
    assert!(matches!(
        parse_vendor_boot(&vendor),
        Err(Error::BadRamdiskTable { index: 0, .. })
    ));
}

#[test]
fn a_vendor_boot_image_needs_a_v3_or_later_boot_image_of_its_version() {
    let vendor_file = vendor_boot(3, 2048, &[("", 0, b"r")], b"", "", b"");
    let vendor = parse_vendor_boot(&vendor_file).expect("parses");
    let old = sample(2, 2048);
    let err = BootPayload::assemble(&parse_boot(&old).expect("parses"), Some(&vendor))
        .expect_err("refused");
    assert_eq!(err, Error::VendorMismatch { boot: 2, vendor: 3 });
    let v4 = boot_v3_v4(4, b"k", b"r", b"", "");
    assert!(BootPayload::assemble(&parse_boot(&v4).expect("parses"), Some(&vendor)).is_err());
}

fn valid_images() -> Vec<Vec<u8>> {
    vec![
        sample(0, 2048),
        sample(1, 2048),
        sample(2, 4096),
        boot_v3_v4(3, &filler(300, 1), &filler(200, 2), b"", "a"),
        boot_v3_v4(4, &filler(300, 1), &filler(200, 2), b"sig", "a"),
        vendor_boot(3, 2048, &[("", 0, &filler(300, 3))], b"dtb", "v", b""),
        vendor_boot(
            4,
            2048,
            &[("a", 1, &filler(30, 3)), ("b", 2, &filler(40, 4))],
            b"dtb",
            "v",
            b"x=1\n",
        ),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..5000)) {
        let _ = parse_boot(&bytes);
        let _ = parse_vendor_boot(&bytes);
    }

    #[test]
    fn mutated_headers_never_panic(
        which in 0usize..7,
        edits in proptest::collection::vec((0usize..2200, any::<u32>()), 1..6),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut file = valid_images().swap_remove(which);
        for (offset, value) in edits {
            let offset = offset.min(file.len().saturating_sub(4));
            put_u32(&mut file, offset, value);
        }
        let len = cut.index(file.len() + 1);
        let file = &file[..len];
        let boot = parse_boot(file);
        let vendor = parse_vendor_boot(file);
        if let Ok(boot) = &boot {
            let _ = BootPayload::assemble(boot, vendor.as_ref().ok());
        }
    }
}
