#![no_std]
#![no_main]

use defmt_semihosting as _;

#[embassy_executor::main]
async fn main(_s: embassy_executor::Spawner) {
    defmt::info!("hello");
    cortex_m_semihosting::debug::exit(cortex_m_semihosting::debug::EXIT_SUCCESS);
}

#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    cortex_m_semihosting::debug::exit(cortex_m_semihosting::debug::EXIT_FAILURE);
    loop {}
}

#[link_section = ".vector_table.interrupts"]
#[no_mangle]
pub static __INTERRUPTS: [usize; 43] = [0; 43];
